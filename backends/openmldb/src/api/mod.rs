//! The nameserver's and tablets' RPCs over brpc's HTTP/JSON mapping: `POST
//! http://<endpoint>/NameServer/<Method>` and `/TabletServer/<Method>`, the protos' field names
//! as JSON keys, enums by name, and `Authorization: sdefault` on every request (0.9 rejects
//! requests without one). Application errors come back as HTTP 200 with a non-zero `code`;
//! framework errors as 4xx/5xx with a plain-text body. Shapes from `src/proto/name_server.proto`
//! and `src/proto/tablet.proto` (docs/openmldb-interfaces.md, docs/upstream/openmldb.md §2).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::OpenMldbError;

mod nameserver;
mod tablet;

pub use nameserver::*;
pub use tablet::*;

pub use crate::error::code;

/// Every response's status: `code` 0 and `msg` `ok` on success.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The return code.
    #[serde(default)]
    pub code: i32,
    /// Its message.
    #[serde(default)]
    pub msg: String,
}

/// A service on one server, reached over HTTP/JSON.
#[derive(Clone, Debug)]
pub struct Endpoint {
    http: reqwest::Client,
    /// `host:port`.
    pub addr: String,
}

impl Endpoint {
    /// `addr` (`host:port`) with each request's deadline `timeout`.
    pub fn new(addr: &str, timeout: Duration) -> Self {
        Self {
            // A host that drops packets is told by its connect running out, before the
            // call's own deadline, so that it reads as not reached rather than as a call
            // that may have been taken.
            http: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout / 2)
                .build()
                .unwrap_or_default(),
            addr: addr.to_string(),
        }
    }

    /// The server's version, from brpc's builtin `GET /version` (the only place an OpenMLDB
    /// server names it: `Server::set_version` in `src/cmd/openmldb.cc`, a plain-text
    /// `0.9.2-bfe5ba6`; the service class's name for a moment after the port opens).
    ///
    /// # Errors
    /// [`OpenMldbError::Transport`] or [`OpenMldbError::Http`].
    pub async fn version(&self) -> Result<String, OpenMldbError> {
        let at = || (self.addr.clone(), "GET /version");
        let resp = self
            .http
            .get(format!("http://{}/version", self.addr))
            .send()
            .await
            .map_err(|e| OpenMldbError::transport(at(), &e))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| OpenMldbError::transport(at(), &e))?;
        if !status.is_success() {
            return Err(OpenMldbError::Http {
                server: self.addr.clone(),
                method: "GET /version",
                status: status.as_u16(),
                body: clip(&body),
            });
        }
        Ok(body.trim().to_string())
    }

    /// Calls `service`/`method` with `request`.
    ///
    /// # Errors
    /// [`OpenMldbError::Transport`] when the server cannot be reached or does not answer in
    /// time, [`OpenMldbError::Http`] for a non-200 answer (brpc's framework errors),
    /// [`OpenMldbError::BadBody`] for a body that is not the method's JSON, and
    /// [`OpenMldbError::App`] for a non-zero `code`.
    pub async fn call<Q: Serialize + ?Sized, R: DeserializeOwned + HasStatus>(
        &self,
        service: &'static str,
        method: &'static str,
        request: &Q,
    ) -> Result<R, OpenMldbError> {
        let at = || (self.addr.clone(), method);
        let resp = self
            .http
            .post(format!("http://{}/{service}/{method}", self.addr))
            .header("Authorization", "sdefault")
            .json(request)
            .send()
            .await
            .map_err(|e| OpenMldbError::transport(at(), &e))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| OpenMldbError::transport(at(), &e))?;
        if !status.is_success() {
            return Err(OpenMldbError::Http {
                server: self.addr.clone(),
                method,
                status: status.as_u16(),
                body: clip(&body),
            });
        }
        let r: R = serde_json::from_str(&body).map_err(|e| OpenMldbError::BadBody {
            server: self.addr.clone(),
            method,
            reason: e.to_string(),
            body: clip(&body),
        })?;
        let s = r.status();
        if s.code != code::OK {
            return Err(OpenMldbError::App {
                server: self.addr.clone(),
                method,
                code: s.code,
                msg: s.msg.clone(),
            });
        }
        Ok(r)
    }
}

/// A response's status, for [`Endpoint::call`].
pub trait HasStatus {
    /// The status.
    fn status(&self) -> &Status;
}

impl HasStatus for Status {
    fn status(&self) -> &Status {
        self
    }
}

macro_rules! has_status {
    ($($t:ty),*) => {$(
        impl HasStatus for $t {
            fn status(&self) -> &Status {
                &self.status
            }
        }
    )*};
}

has_status!(
    ShowTabletResponse,
    ShowTableResponse,
    ShowOpStatusResponse,
    ConfGetResponse,
    GetTableStatusResponse,
    GetTableFollowerResponse,
    GetTermPairResponse,
    GetManifestResponse
);

/// The first 200 characters of a body, for messages.
fn clip(body: &str) -> String {
    body.chars().take(200).collect()
}
