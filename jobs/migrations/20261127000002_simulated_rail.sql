-- State of the SIMULATED payment rail (not a real provider), shared by every
-- worker: one transfer per payout id, like a provider's idempotency key, and
-- the number of calls made for each payout (failures are chosen per call).
CREATE TABLE simulated_rail_transfers (
    payout_id  TEXT PRIMARY KEY,
    currency   TEXT NOT NULL,
    wallet     TEXT NOT NULL,
    amount     NUMERIC(40, 18) NOT NULL,
    tx_hash    TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE simulated_rail_calls (
    payout_id TEXT PRIMARY KEY,
    calls     INTEGER NOT NULL
);
