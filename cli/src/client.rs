//! The HTTP client: base URL and token from the configuration, and errors
//! that carry the API's `LUCID_ERR_` code.

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::Value;

/// Where the API is and how to call it: defaults, then
/// `~/.config/lucid/config.toml` (`api_url`, `token`), then `LUCID_API_URL`
/// and `LUCID_API_TOKEN`.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// API base URL.
    #[serde(default = "default_url")]
    pub api_url: String,
    /// Bearer token.
    #[serde(default)]
    pub token: Option<String>,
}

fn default_url() -> String {
    "http://127.0.0.1:8095".into()
}

impl Config {
    /// Loads the layered configuration.
    pub fn load() -> anyhow::Result<Self> {
        use figment::providers::{Env, Format, Toml};
        let mut f = figment::Figment::new();
        if let Some(home) = std::env::var_os("HOME") {
            f = f.merge(Toml::file(
                std::path::Path::new(&home).join(".config/lucid/config.toml"),
            ));
        }
        f.merge(Env::prefixed("LUCID_API_").map(|k| match k.as_str() {
            "URL" | "url" => "api_url".into(),
            _ => k.as_str().to_lowercase().into(),
        }))
        .extract()
        .context(
            "read the configuration (~/.config/lucid/config.toml, LUCID_API_URL, LUCID_API_TOKEN)",
        )
    }
}

/// An error answer of the API.
#[derive(Debug)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: u16,
    /// `LUCID_ERR_XXXX`, when the body had one.
    pub code: String,
    /// Message.
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} (HTTP {})", self.code, self.message, self.status)
    }
}

impl std::error::Error for ApiFailure {}

/// A configured client.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client for `config`.
    pub fn new(config: &Config) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: config.api_url.trim_end_matches('/').to_string(),
            token: config.token.clone(),
        }
    }

    /// Sends a request; a non-2xx answer is an [`ApiFailure`].
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req
            .send()
            .await
            .with_context(|| format!("cannot reach the API at {}", self.base))?;
        let status = r.status().as_u16();
        let text = r.text().await.context("read the answer")?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let e = &value["error"];
        Err(ApiFailure {
            status,
            code: e["code"].as_str().unwrap_or("LUCID_ERR_????").to_string(),
            message: e["message"]
                .as_str()
                .map_or_else(|| value.to_string(), String::from),
        }
        .into())
    }

    /// GET.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}
