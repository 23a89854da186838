-- Double-entry payout ledger: accounts, journal entries and their postings.
-- Every entry balances to zero per currency (a deferred constraint trigger
-- checks it at commit), entries are append-only, and each entry has a unique
-- key, so re-running a step (reserve, settle, reverse, accrue) is a no-op.
-- Balances are never stored: they are sums of postings.

CREATE TABLE ledger_accounts (
    id         BIGSERIAL PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('treasury', 'payable', 'fees', 'paid_out', 'earnings', 'rewards')),
    node_id    TEXT NOT NULL DEFAULT '',
    currency   TEXT NOT NULL CHECK (currency IN ('USDT', 'LUCID')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (kind, node_id, currency),
    UNIQUE (id, currency),
    -- Node accounts name their node; network accounts do not.
    CHECK ((kind IN ('payable', 'earnings')) = (node_id <> ''))
);

CREATE TABLE journal_entries (
    id         BIGSERIAL PRIMARY KEY,
    key        TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL CHECK (kind IN ('reserve', 'settle', 'reverse', 'accrue', 'fund')),
    payout_id  TEXT,
    tx_hash    TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((kind = 'settle') = (tx_hash IS NOT NULL))
);

-- A payout ends once: settled or reversed, never both.
CREATE UNIQUE INDEX journal_entries_one_outcome_per_payout
    ON journal_entries (payout_id) WHERE kind IN ('settle', 'reverse');
CREATE INDEX journal_entries_payout ON journal_entries (payout_id);

CREATE TABLE postings (
    id         BIGSERIAL PRIMARY KEY,
    entry_id   BIGINT NOT NULL REFERENCES journal_entries (id),
    account_id BIGINT NOT NULL,
    currency   TEXT NOT NULL,
    amount     NUMERIC(40, 18) NOT NULL CHECK (amount <> 0),
    FOREIGN KEY (account_id, currency) REFERENCES ledger_accounts (id, currency)
);
CREATE INDEX postings_entry ON postings (entry_id);
CREATE INDEX postings_account ON postings (account_id);

CREATE FUNCTION ledger_entry_balances() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM postings WHERE entry_id = NEW.entry_id
               GROUP BY currency HAVING sum(amount) <> 0) THEN
        RAISE EXCEPTION 'journal entry % does not balance to zero', NEW.entry_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER postings_balance
    AFTER INSERT ON postings DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_balances();

CREATE FUNCTION ledger_entry_has_postings() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT count(*) FROM postings WHERE entry_id = NEW.id) < 2 THEN
        RAISE EXCEPTION 'journal entry % needs at least two postings', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER entries_have_postings
    AFTER INSERT ON journal_entries DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_has_postings();

CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER postings_append_only BEFORE UPDATE OR DELETE ON postings
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER journal_entries_append_only BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
