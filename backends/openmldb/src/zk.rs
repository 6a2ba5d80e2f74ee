//! What OpenMLDB keeps in ZooKeeper under its root (`--zk_root_path`, default `/openmldb`),
//! read with `zookeeper-client` (docs/openmldb-interfaces.md, "ZooKeeper"):
//!
//! - `<root>/leader/lock_request<seq>`: one ephemeral sequential node per running nameserver,
//!   holding its endpoint; the leader is the first child in sorted order (mapped through
//!   `<root>/map/names/<name>` under `--use_name`). It is only a candidate: for up to one
//!   session timeout after a nameserver dies its node stays first, so a caller confirms it
//!   with a call that answers code 0.
//! - `<root>/nodes/<endpoint>`: one ephemeral node per registered tablet; `startup_<endpoint>`
//!   when written by a process that just started.
//! - `<root>/config/auto_failover`: `true` or `false`, authoritative.
//! - `<root>/taskmanager/leader`: the taskmanager leader's `host:port`.

use std::time::Duration;

use zookeeper_client as zk;

use crate::error::OpenMldbError;

/// A ZooKeeper session rooted at an OpenMLDB cluster's root.
#[derive(Clone)]
pub struct Zk {
    client: zk::Client,
    /// `host:port[,host:port...]` and the root, for messages.
    name: String,
    root: String,
}

impl std::fmt::Debug for Zk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zk")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A registered tablet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TabletNode {
    /// Its endpoint (the node's name).
    pub endpoint: String,
    /// Registered by a process that just started (`startup_` prefix): its memory tables are
    /// empty until recovered.
    pub fresh_start: bool,
}

impl Zk {
    /// Connects to `ensemble` (`host:port[,host:port...]`) with a session of `session`, as the
    /// digest identity `digest` (`user:password`) when given, and checks that `root` holds an
    /// OpenMLDB cluster (its `leader` node exists). A cluster started with `--zk_cert` creates
    /// its nodes readable by that identity alone (`ZOO_CREATOR_ALL_ACL`, `ZkClient::Init`).
    ///
    /// # Errors
    /// [`OpenMldbError::ZooKeeper`] when no server answers within `session`, or a node cannot
    /// be read without the cluster's credential (naming it);
    /// [`OpenMldbError::NotFound`] when the root holds no OpenMLDB.
    pub async fn connect(
        ensemble: &str,
        root: &str,
        session: Duration,
        digest: Option<&str>,
    ) -> Result<Self, OpenMldbError> {
        let name = format!("{ensemble}{root}");
        let root = root.trim_end_matches('/').to_string();
        let mut connector = zk::Client::connector().with_session_timeout(session);
        if let Some(d) = digest {
            connector = connector.with_auth("digest", d.as_bytes());
        }
        let connect = connector.connect(ensemble);
        let client = match tokio::time::timeout(session, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(zk_err(&name, "connect", &e)),
            Err(_) => {
                return Err(OpenMldbError::ZooKeeper {
                    zk: name,
                    what: "connect".into(),
                    reason: format!("no server answered within {} s", session.as_secs()),
                });
            }
        };
        let me = Self { client, name, root };
        let has = me
            .client
            .check_stat(&me.path("/leader"))
            .await
            .map_err(|e| zk_err(&me.name, "check the leader node", &e))?;
        if has.is_none() {
            return Err(OpenMldbError::NotFound {
                zk: me.name.clone(),
                reason: format!(
                    "no OpenMLDB under {} (no {}/leader node): check --zk-root",
                    me.root, me.root
                ),
            });
        }
        Ok(me)
    }

    /// The ensemble and root, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn path(&self, rel: &str) -> String {
        format!("{}{rel}", self.root)
    }

    /// The nameservers in election order, by endpoint (first: the leader candidate).
    ///
    /// # Errors
    /// ZooKeeper could not be read.
    pub async fn nameservers(&self) -> Result<Vec<String>, OpenMldbError> {
        let dir = self.path("/leader");
        let mut children = self
            .client
            .list_children(&dir)
            .await
            .map_err(|e| zk_err(&self.name, "list the nameservers", &e))?;
        children.sort();
        let mut out = Vec::with_capacity(children.len());
        for c in children {
            match self.client.get_data(&format!("{dir}/{c}")).await {
                Ok((data, _)) => out.push(self.real(&String::from_utf8_lossy(&data)).await?),
                // Its session ended between the two reads: it is gone.
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(zk_err(&self.name, "read a nameserver", &e)),
            }
        }
        Ok(out)
    }

    /// The leader candidate: the first nameserver in election order.
    ///
    /// # Errors
    /// [`OpenMldbError::NotFound`] when no nameserver runs.
    pub async fn leader(&self) -> Result<String, OpenMldbError> {
        self.nameservers()
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| OpenMldbError::NotFound {
                zk: self.name.clone(),
                reason: "no nameserver is registered (empty leader node)".into(),
            })
    }

    /// An endpoint or server name mapped to its address (`/map/names`, under `--use_name`).
    async fn real(&self, name: &str) -> Result<String, OpenMldbError> {
        match self
            .client
            .get_data(&self.path(&format!("/map/names/{name}")))
            .await
        {
            Ok((data, _)) => Ok(String::from_utf8_lossy(&data).into_owned()),
            Err(zk::Error::NoNode) => Ok(name.to_string()),
            Err(e) => Err(zk_err(&self.name, "map a server name", &e)),
        }
    }

    /// The registered tablets.
    ///
    /// # Errors
    /// ZooKeeper could not be read.
    pub async fn tablets(&self) -> Result<Vec<TabletNode>, OpenMldbError> {
        let dir = self.path("/nodes");
        let mut children = match self.client.list_children(&dir).await {
            Ok(c) => c,
            Err(zk::Error::NoNode) => Vec::new(),
            Err(e) => return Err(zk_err(&self.name, "list the tablets", &e)),
        };
        children.sort();
        let mut out = Vec::with_capacity(children.len());
        for c in children {
            let data = match self.client.get_data(&format!("{dir}/{c}")).await {
                Ok((data, _)) => String::from_utf8_lossy(&data).into_owned(),
                Err(zk::Error::NoNode) => continue,
                Err(e) => return Err(zk_err(&self.name, "read a tablet", &e)),
            };
            out.push(TabletNode {
                endpoint: self.real(&c).await?,
                fresh_start: data.starts_with("startup_"),
            });
        }
        Ok(out)
    }

    /// `auto_failover` as ZooKeeper holds it; `None` when the node is missing.
    ///
    /// # Errors
    /// ZooKeeper could not be read.
    pub async fn auto_failover(&self) -> Result<Option<bool>, OpenMldbError> {
        match self
            .client
            .get_data(&self.path("/config/auto_failover"))
            .await
        {
            Ok((data, _)) => Ok(Some(
                String::from_utf8_lossy(&data)
                    .trim()
                    .eq_ignore_ascii_case("true"),
            )),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(zk_err(&self.name, "read /config/auto_failover", &e)),
        }
    }

    /// The taskmanager leader's address, when one runs.
    ///
    /// # Errors
    /// ZooKeeper could not be read.
    pub async fn taskmanager(&self) -> Result<Option<String>, OpenMldbError> {
        match self
            .client
            .get_data(&self.path("/taskmanager/leader"))
            .await
        {
            Ok((data, _)) => Ok(Some(String::from_utf8_lossy(&data).into_owned())),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(zk_err(&self.name, "read the taskmanager leader", &e)),
        }
    }

    /// Completes when the nameservers or the tablets change (a leader election, a tablet's
    /// registration or expiry): a wake hint for the engine's waits.
    ///
    /// # Errors
    /// ZooKeeper could not be read.
    pub async fn changed(&self) -> Result<(), OpenMldbError> {
        let (_, _, leader) = self
            .client
            .get_and_watch_children(&self.path("/leader"))
            .await
            .map_err(|e| zk_err(&self.name, "watch the nameservers", &e))?;
        let nodes = self
            .client
            .get_and_watch_children(&self.path("/nodes"))
            .await;
        match nodes {
            Ok((_, _, tablets)) => {
                tokio::select! {
                    _ = leader.changed() => {}
                    _ = tablets.changed() => {}
                }
            }
            Err(_) => {
                leader.changed().await;
            }
        }
        Ok(())
    }

    /// The underlying client, for the emulator and tests.
    pub fn client(&self) -> &zk::Client {
        &self.client
    }
}

fn zk_err(name: &str, what: &str, e: &zk::Error) -> OpenMldbError {
    let reason = match e {
        zk::Error::NoAuth => format!(
            "{e}: the cluster locks its nodes to a digest identity (--zk_cert); give it \
             (user:password, e.g. with --zk-auth-file)"
        ),
        _ => e.to_string(),
    };
    OpenMldbError::ZooKeeper {
        zk: name.to_string(),
        what: what.to_string(),
        reason,
    }
}
