//! Nodes: identity, hardware, location, configuration and the start/stop
//! state machine.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    Check, ValidationErrors,
    validation::{is_display_name, is_prefixed_id},
};

/// A node id: `^node_[A-Za-z0-9_-]+$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeId(String);

impl NodeId {
    /// Validates a node id.
    pub fn parse(s: &str) -> Result<Self, String> {
        if is_prefixed_id(s, "node_") {
            Ok(Self(s.to_string()))
        } else {
            Err("must match ^node_[A-Za-z0-9_-]+$ (at most 128 characters)".into())
        }
    }
    /// A new random id.
    pub fn generate() -> Self {
        Self(format!("node_{}", uuid::Uuid::now_v7().simple()))
    }
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Operational status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Running and taking work.
    Active,
    /// Stopped.
    Inactive,
    /// Under maintenance.
    Maintenance,
    /// Failed.
    Error,
    /// Being started.
    Starting,
    /// Being stopped.
    Stopping,
}

impl NodeStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Maintenance => "maintenance",
            Self::Error => "error",
            Self::Starting => "starting",
            Self::Stopping => "stopping",
        }
    }
}

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeType {
    /// Runs jobs.
    Worker,
    /// Validates PoOT.
    Validator,
    /// Stores data.
    Storage,
    /// General compute.
    Compute,
}

/// A start or stop request on the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// To `active`.
    Start,
    /// To `inactive`.
    Stop,
}

impl Transition {
    /// Statuses the transition may start from.
    pub fn allowed_from(self) -> &'static [NodeStatus] {
        match self {
            Self::Start => &[
                NodeStatus::Inactive,
                NodeStatus::Error,
                NodeStatus::Maintenance,
                NodeStatus::Starting,
            ],
            Self::Stop => &[
                NodeStatus::Active,
                NodeStatus::Error,
                NodeStatus::Maintenance,
                NodeStatus::Stopping,
                NodeStatus::Starting,
            ],
        }
    }
    /// The status it leads to.
    pub fn target(self) -> NodeStatus {
        match self {
            Self::Start => NodeStatus::Active,
            Self::Stop => NodeStatus::Inactive,
        }
    }
}

/// CPU description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CpuInfo {
    /// Cores, 1–1024.
    pub cores: u32,
    /// Clock, 1–10000 MHz.
    pub frequency_mhz: u32,
    /// e.g. `x86_64`, `arm64`.
    pub architecture: String,
}

/// GPU description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuInfo {
    /// Model name.
    pub model: String,
    /// Memory per GPU.
    pub memory_bytes: u64,
    /// Number of GPUs, 1–64.
    pub count: u32,
}

/// Network description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkInfo {
    /// Link bandwidth.
    pub bandwidth_mbps: u64,
    /// Public address, if any.
    pub public_ip: Option<String>,
}

/// Hardware of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HardwareInfo {
    /// CPU.
    pub cpu: CpuInfo,
    /// RAM.
    pub memory_bytes: u64,
    /// Disk.
    pub storage_bytes: u64,
    /// GPU, if any.
    pub gpu: Option<GpuInfo>,
    /// Network, if described.
    pub network: Option<NetworkInfo>,
}

/// Geographic coordinates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Coordinates {
    /// -90..=90.
    pub latitude: f64,
    /// -180..=180.
    pub longitude: f64,
}

/// Where a node runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// ISO 3166-1 alpha-2, upper case.
    pub country: String,
    /// Region or state.
    pub region: String,
    /// City.
    pub city: String,
    /// IANA time zone, e.g. `Europe/Berlin` or `UTC`.
    pub timezone: String,
    /// Coordinates, if known.
    pub coordinates: Option<Coordinates>,
}

/// Limits a node applies to its work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    /// 1–100.
    pub cpu_percent: u8,
    /// Memory limit.
    pub memory_bytes: u64,
    /// Disk limit.
    pub disk_bytes: u64,
    /// Network limit.
    pub network_mbps: u64,
}

/// A weekly maintenance window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    /// 0 = Sunday … 6 = Saturday.
    pub day_of_week: u8,
    /// Start, `HH:MM` UTC.
    pub start_time: String,
    /// Length, 1–1440 minutes.
    pub duration_minutes: u32,
}

fn default_max_sessions() -> u32 {
    10
}

/// Node configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeConfiguration {
    /// Concurrent sessions, 1–1000 (default 10).
    #[serde(default = "default_max_sessions")]
    pub max_sessions: u32,
    /// Resource limits.
    pub resource_limits: ResourceLimits,
    /// Whether the node takes part in pool auto-scaling.
    #[serde(default)]
    pub auto_scaling: bool,
    /// Maintenance window, if any.
    pub maintenance_window: Option<MaintenanceWindow>,
    /// Where earnings are paid, per currency (needed for earnings payouts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payout_wallets: Option<PayoutWallets>,
}

/// A node's payout wallets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayoutWallets {
    /// TRON address for USDT.
    #[serde(rename = "USDT", default, skip_serializing_if = "Option::is_none")]
    pub usdt: Option<String>,
    /// `0x` address for LUCID.
    #[serde(rename = "LUCID", default, skip_serializing_if = "Option::is_none")]
    pub lucid: Option<String>,
}

impl PayoutWallets {
    /// The wallet for `currency`, if set.
    pub fn for_currency(&self, currency: super::payout::Currency) -> Option<&str> {
        match currency {
            super::payout::Currency::Usdt => self.usdt.as_deref(),
            super::payout::Currency::Lucid => self.lucid.as_deref(),
        }
    }
}

/// A status change, kept on the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatusTransition {
    /// Previous status.
    pub from: NodeStatus,
    /// New status.
    pub to: NodeStatus,
    /// When.
    pub at: DateTime<Utc>,
}

const ISO_3166_ALPHA2: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// Whether `s` is an assigned ISO 3166-1 alpha-2 code.
pub fn is_country_code(s: &str) -> bool {
    s.len() == 2 && ISO_3166_ALPHA2.split(' ').any(|c| c == s)
}

fn is_timezone(s: &str) -> bool {
    s == "UTC"
        || (s.len() <= 64
            && s.contains('/')
            && s.split('/').all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_+-".contains(c))
            }))
}

fn is_hh_mm(s: &str) -> bool {
    let Some((h, m)) = s.split_once(':') else {
        return false;
    };
    h.len() == 2
        && m.len() == 2
        && h.parse::<u8>().is_ok_and(|h| h < 24)
        && m.parse::<u8>().is_ok_and(|m| m < 60)
}

impl HardwareInfo {
    /// Checks bounds.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Check::new();
        c.range("cpu.cores", self.cpu.cores, 1, 1024)
            .range("cpu.frequency_mhz", self.cpu.frequency_mhz, 1, 10_000)
            .ensure(
                (1..=32).contains(&self.cpu.architecture.len()),
                "cpu.architecture",
                "must be 1 to 32 characters",
            )
            .range("memory_bytes", self.memory_bytes, 1, MAX_BYTES)
            .range("storage_bytes", self.storage_bytes, 1, MAX_BYTES);
        if let Some(g) = &self.gpu {
            c.ensure(
                (1..=100).contains(&g.model.len()),
                "gpu.model",
                "must be 1 to 100 characters",
            )
            .range("gpu.memory_bytes", g.memory_bytes, 0, MAX_BYTES)
            .range("gpu.count", g.count, 1, 64);
        }
        if let Some(n) = &self.network {
            c.range("network.bandwidth_mbps", n.bandwidth_mbps, 1, MAX_BYTES)
                .ensure(
                    n.public_ip
                        .as_ref()
                        .is_none_or(|ip| ip.parse::<std::net::IpAddr>().is_ok()),
                    "network.public_ip",
                    "must be an IP address",
                );
        }
        c.finish()
    }
}

impl Location {
    /// Checks the country code, names and time zone.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Check::new();
        c.ensure(
            is_country_code(&self.country),
            "country",
            "must be an ISO 3166-1 alpha-2 code, e.g. DE",
        )
        .ensure(
            (1..=100).contains(&self.region.chars().count()),
            "region",
            "must be 1 to 100 characters",
        )
        .ensure(
            (1..=100).contains(&self.city.chars().count()),
            "city",
            "must be 1 to 100 characters",
        )
        .ensure(
            is_timezone(&self.timezone),
            "timezone",
            "must be an IANA time zone such as Europe/Berlin, or UTC",
        );
        if let Some(p) = &self.coordinates {
            c.ensure(
                (-90.0..=90.0).contains(&p.latitude),
                "coordinates.latitude",
                "must be between -90 and 90",
            )
            .ensure(
                (-180.0..=180.0).contains(&p.longitude),
                "coordinates.longitude",
                "must be between -180 and 180",
            );
        }
        c.finish()
    }
}

impl NodeConfiguration {
    /// Checks bounds.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Check::new();
        c.range("max_sessions", self.max_sessions, 1, 1000)
            .range(
                "resource_limits.cpu_percent",
                self.resource_limits.cpu_percent,
                1,
                100,
            )
            .range(
                "resource_limits.memory_bytes",
                self.resource_limits.memory_bytes,
                0,
                MAX_BYTES,
            )
            .range(
                "resource_limits.disk_bytes",
                self.resource_limits.disk_bytes,
                0,
                MAX_BYTES,
            )
            .range(
                "resource_limits.network_mbps",
                self.resource_limits.network_mbps,
                0,
                MAX_BYTES,
            );
        if let Some(w) = &self.payout_wallets {
            for currency in super::payout::Currency::ALL {
                if let Some(addr) = w.for_currency(currency)
                    && let Err(m) = currency.check_wallet(addr)
                {
                    c.ensure(false, format!("payout_wallets.{currency}"), m);
                }
            }
        }
        if let Some(w) = &self.maintenance_window {
            c.range("maintenance_window.day_of_week", w.day_of_week, 0, 6)
                .ensure(
                    is_hh_mm(&w.start_time),
                    "maintenance_window.start_time",
                    "must be HH:MM",
                )
                .range(
                    "maintenance_window.duration_minutes",
                    w.duration_minutes,
                    1,
                    1440,
                );
        }
        c.finish()
    }
}

/// Largest byte count accepted (2^53: exact in JSON clients and in BSON).
pub const MAX_BYTES: u64 = 1 << 53;

/// Validates a node name: 3–100 characters of `[A-Za-z0-9 _-]`.
pub fn check_name(c: &mut Check, field: &str, name: &str) {
    c.ensure(
        is_display_name(name),
        field,
        "must be 3 to 100 characters of letters, digits, space, _ or -",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_must_have_the_node_prefix_and_a_safe_suffix() {
        assert!(NodeId::parse("node_abc-1_X").is_ok());
        for bad in ["node_", "abc", "node_a b", "node_é", "pool_x", ""] {
            assert!(NodeId::parse(bad).is_err(), "{bad}");
        }
        assert!(NodeId::parse(NodeId::generate().as_str()).is_ok());
    }

    #[test]
    fn start_and_stop_are_refused_from_their_own_target() {
        assert!(
            !Transition::Start
                .allowed_from()
                .contains(&NodeStatus::Active)
        );
        assert!(
            !Transition::Stop
                .allowed_from()
                .contains(&NodeStatus::Inactive)
        );
    }

    #[test]
    fn country_codes_are_iso_alpha2() {
        assert!(is_country_code("DE") && is_country_code("US"));
        assert!(!is_country_code("de") && !is_country_code("XX") && !is_country_code("DEU"));
    }

    #[test]
    fn time_zones_and_window_times_are_checked() {
        assert!(
            is_timezone("Europe/Berlin")
                && is_timezone("UTC")
                && is_timezone("America/Argentina/Buenos_Aires")
        );
        assert!(!is_timezone("Berlin") && !is_timezone("Europe//Berlin"));
        assert!(is_hh_mm("23:59") && !is_hh_mm("24:00") && !is_hh_mm("7:00"));
    }
}
