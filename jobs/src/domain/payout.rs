//! Payout money rules: currencies, wallets, amounts and fees, all exact
//! (`rust_decimal`; no floating point near money).

use std::{fmt, str::FromStr};

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use sha3::{Digest, Keccak256};
use utoipa::ToSchema;

/// A payout currency.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
pub enum Currency {
    /// Tether on TRON (TRC-20): 6 decimals, TRON base58check wallets.
    #[serde(rename = "USDT")]
    Usdt,
    /// The network's token: 18 decimals, `0x` EVM wallets.
    #[serde(rename = "LUCID")]
    Lucid,
}

impl Currency {
    /// Every currency.
    pub const ALL: [Currency; 2] = [Currency::Usdt, Currency::Lucid];

    /// Decimal places of the currency's smallest unit.
    pub fn decimals(self) -> u32 {
        match self {
            Self::Usdt => 6,
            Self::Lucid => 18,
        }
    }

    /// `USDT` or `LUCID`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Usdt => "USDT",
            Self::Lucid => "LUCID",
        }
    }

    /// Checks a wallet address for this currency.
    pub fn check_wallet(self, wallet: &str) -> Result<(), String> {
        match self {
            Self::Usdt => check_tron_address(wallet),
            Self::Lucid => check_evm_address(wallet),
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Currency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "USDT" => Ok(Self::Usdt),
            "LUCID" => Ok(Self::Lucid),
            other => Err(format!("unknown currency {other:?}: USDT or LUCID")),
        }
    }
}

/// A TRON address: base58check of `0x41` + 20 bytes, 34 characters, starting with `T`.
pub fn check_tron_address(wallet: &str) -> Result<(), String> {
    if wallet.len() != 34 || !wallet.starts_with('T') {
        return Err("must be a TRON address: 34 characters starting with T".into());
    }
    let bytes = bs58::decode(wallet)
        .with_check(None)
        .into_vec()
        .map_err(|_| "is not valid base58check (bad character or checksum)".to_string())?;
    if bytes.len() != 21 || bytes[0] != 0x41 {
        return Err("is not a TRON address (version byte 0x41, 20-byte body)".into());
    }
    Ok(())
}

/// An EVM address: `0x` + 40 hex; when mixed case, its EIP-55 checksum must hold.
pub fn check_evm_address(wallet: &str) -> Result<(), String> {
    let Some(hex_part) = wallet.strip_prefix("0x") else {
        return Err("must be 0x followed by 40 hex digits".into());
    };
    if hex_part.len() != 40 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("must be 0x followed by 40 hex digits".into());
    }
    let lower = hex_part.to_ascii_lowercase();
    if hex_part == lower || hex_part == hex_part.to_ascii_uppercase() {
        return Ok(());
    }
    if hex_part != eip55(&lower) {
        return Err("fails its EIP-55 checksum (mixed case)".into());
    }
    Ok(())
}

/// The EIP-55 mixed-case form of 40 lowercase hex digits.
pub fn eip55(lower_hex: &str) -> String {
    let hash = Keccak256::digest(lower_hex.as_bytes());
    lower_hex
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
            if c.is_ascii_alphabetic() && nibble >= 8 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// The fee schedule and amount limits (settings `LUCID_PAYOUTS__*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FeeSchedule {
    /// Smallest payout amount.
    pub min_amount: Decimal,
    /// Largest payout amount.
    pub max_amount: Decimal,
    /// Fee as a share of the amount (0.01 = 1 %).
    pub fee_rate: Decimal,
    /// Smallest fee, in the payout's currency.
    pub min_fee: Decimal,
    /// Largest fee, in the payout's currency.
    pub max_fee: Decimal,
}

impl Default for FeeSchedule {
    fn default() -> Self {
        Self {
            min_amount: Decimal::ONE,
            max_amount: Decimal::from(10_000),
            fee_rate: Decimal::new(1, 2),
            min_fee: Decimal::new(1, 1),
            max_fee: Decimal::from(10),
        }
    }
}

/// An amount split into fee and net.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charges {
    /// What the operator is owed.
    pub amount: Decimal,
    /// The fee.
    pub fee: Decimal,
    /// What reaches the wallet: `amount − fee`.
    pub net: Decimal,
}

impl FeeSchedule {
    /// Checks `amount` for `currency` (positive, within the limits, no more
    /// decimals than the currency has) and splits it: fee = `fee_rate ·
    /// amount` rounded half-even to the currency's decimals and clamped to
    /// `[min_fee, max_fee]`; net = amount − fee, exactly.
    pub fn charges(&self, currency: Currency, amount: Decimal) -> Result<Charges, String> {
        if amount <= Decimal::ZERO {
            return Err("must be positive".into());
        }
        if amount.normalize().scale() > currency.decimals() {
            return Err(format!(
                "has more than {} decimals, the precision of {currency}",
                currency.decimals()
            ));
        }
        if amount < self.min_amount || amount > self.max_amount {
            return Err(format!(
                "must be between {} and {} {currency}",
                self.min_amount.normalize(),
                self.max_amount.normalize()
            ));
        }
        let fee = (amount * self.fee_rate)
            .round_dp_with_strategy(currency.decimals(), RoundingStrategy::MidpointNearestEven)
            .clamp(self.min_fee, self.max_fee);
        let amount = amount.normalize();
        Ok(Charges {
            amount,
            fee: fee.normalize(),
            net: (amount - fee).normalize(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    #[test]
    fn fees_are_one_percent_clamped_to_a_tenth_and_ten() {
        let f = FeeSchedule::default();
        let c = f.charges(Currency::Usdt, d("100")).expect("ok");
        assert_eq!((c.fee, c.net), (d("1"), d("99")));
        let c = f.charges(Currency::Usdt, d("5")).expect("ok");
        assert_eq!((c.fee, c.net), (d("0.1"), d("4.9")), "clamped up");
        let c = f.charges(Currency::Lucid, d("10000")).expect("ok");
        assert_eq!((c.fee, c.net), (d("10"), d("9990")), "clamped down");
        let c = f.charges(Currency::Usdt, d("12.345678")).expect("ok");
        assert_eq!(c.fee, d("0.123457"), "0.12345678 rounded to 6 decimals");
        assert_eq!(c.net, d("12.222221"));
    }

    #[test]
    fn bad_amounts_are_refused_with_the_reason() {
        let f = FeeSchedule::default();
        for (amount, why) in [
            ("0", "positive"),
            ("-5", "positive"),
            ("0.5", "between"),
            ("10000.000001", "between"),
            ("1.0000001", "decimals"),
        ] {
            let err = f.charges(Currency::Usdt, d(amount)).unwrap_err();
            assert!(err.contains(why), "{amount}: {err}");
        }
        assert!(
            f.charges(Currency::Lucid, d("1.000000000000000001"))
                .is_ok()
        );
        assert!(
            f.charges(Currency::Lucid, d("1.0000000000000000001"))
                .is_err()
        );
        assert!(
            f.charges(Currency::Usdt, d("2.500000000")).is_ok(),
            "trailing zeros are not decimals"
        );
    }

    #[test]
    fn tron_addresses_need_a_valid_checksum() {
        check_tron_address("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t").expect("USDT contract address");
        assert!(check_tron_address("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6u").is_err());
        assert!(check_tron_address("XR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t").is_err());
        assert!(check_tron_address("T0000000000000000000000000000000000").is_err());
        assert!(check_tron_address("TR7NHq").is_err());
    }

    #[test]
    fn evm_addresses_check_eip55_only_when_mixed_case() {
        // The EIP-55 test vectors.
        for a in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            check_evm_address(a).expect(a);
            check_evm_address(&a.to_ascii_lowercase()).expect("lowercase");
        }
        assert!(check_evm_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD").is_err());
        assert!(check_evm_address("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
        assert!(check_evm_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeA").is_err());
        assert!(check_evm_address("0xZZAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
    }

    fn amount(currency: Currency) -> impl Strategy<Value = Decimal> {
        (1u64..=10_000, 0u64..1_000_000_000_000_000_000u64).prop_map(move |(units, frac)| {
            let scale = currency.decimals();
            let frac = Decimal::from(frac % 10u64.pow(scale.min(18)))
                / Decimal::from(10u64.pow(scale.min(18)));
            (Decimal::from(units) + frac).min(Decimal::from(10_000))
        })
    }

    proptest! {
        #[test]
        fn fee_plus_net_is_the_amount_exactly_and_the_fee_is_within_bounds(
            lucid in any::<bool>(),
            a in amount(Currency::Usdt),
            b in amount(Currency::Lucid),
        ) {
            let (currency, amount) = if lucid { (Currency::Lucid, b) } else { (Currency::Usdt, a) };
            let c = FeeSchedule::default().charges(currency, amount).expect("valid amount");
            prop_assert_eq!(c.fee + c.net, amount);
            prop_assert!(c.fee >= d("0.1") && c.fee <= d("10"));
            prop_assert!(c.fee.scale() <= currency.decimals() && c.net.scale() <= currency.decimals());
            // Within half a unit of the currency of 1 % (when not clamped).
            let exact = amount * d("0.01");
            if exact >= d("0.1") && exact <= d("10") {
                let unit = Decimal::new(1, currency.decimals());
                prop_assert!((c.fee - exact).abs() <= unit / Decimal::TWO);
            }
        }

        #[test]
        fn a_larger_amount_never_gets_a_smaller_net(
            a in amount(Currency::Usdt),
            b in amount(Currency::Usdt),
        ) {
            let f = FeeSchedule::default();
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let (lo, hi) = (f.charges(Currency::Usdt, lo).expect("lo"), f.charges(Currency::Usdt, hi).expect("hi"));
            prop_assert!(lo.net <= hi.net);
        }
    }
}
