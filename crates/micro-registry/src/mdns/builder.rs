//! Which interfaces, and building the registry.

use super::*;

/// Which network interfaces the mDNS registry sends and listens on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MdnsInterfaces {
    /// Every interface (the default).
    #[default]
    All,
    /// Only loopback: nothing leaves the machine.
    Loopback,
    /// Only the named interfaces (and loopback, so the machine can see itself).
    Named(Vec<String>),
}

impl std::str::FromStr for MdnsInterfaces {
    type Err = Error;

    /// `all` (or empty), `loopback` (or `lo`), or a comma-separated list of interface
    /// names such as `eth0,wlan0`.
    fn from_str(s: &str) -> Result<Self, Error> {
        parse_interfaces(s).map_err(|why| Error::Config(format!("mDNS interfaces {s:?}: {why}")))
    }
}

/// Parses [`MdnsInterfaces`]; a refusal says why, for the caller to word.
pub(crate) fn parse_interfaces(s: &str) -> Result<MdnsInterfaces, &'static str> {
    match s.trim() {
        "" | "all" => Ok(MdnsInterfaces::All),
        "loopback" | "lo" => Ok(MdnsInterfaces::Loopback),
        list => {
            let names: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(String::from)
                .collect();
            if names.iter().any(|n| n.contains(char::is_whitespace)) {
                return Err("expected all, loopback or a comma-separated list of interface names");
            }
            Ok(MdnsInterfaces::Named(names))
        }
    }
}

/// Builds an [`MdnsRegistry`].
#[derive(Clone, Debug, Default)]
pub struct MdnsRegistryBuilder {
    interfaces: MdnsInterfaces,
    browse: bool,
}

impl MdnsRegistryBuilder {
    /// Restricts the interfaces (default: all).
    #[must_use]
    pub fn interfaces(mut self, interfaces: MdnsInterfaces) -> Self {
        self.interfaces = interfaces;
        self
    }

    /// Also runs mdns-sd's browse of `_micro._tcp.local.` (default: only where the
    /// registry cannot listen on the mDNS port itself). A browse asks the network
    /// again now and then, so it also finds responders that answer questions but never
    /// announce themselves; it costs each registry work that grows with the number of
    /// nodes (see the [module docs](crate::mdns)).
    ///
    /// ```
    /// use micro_registry::MdnsRegistry;
    ///
    /// let builder = MdnsRegistry::builder().loopback_only().browse(true);
    /// # let _ = builder;
    /// ```
    #[must_use]
    pub fn browse(mut self, browse: bool) -> Self {
        self.browse = browse;
        self
    }

    /// Only loopback: shorthand for `.interfaces(MdnsInterfaces::Loopback)`.
    #[must_use]
    pub fn loopback_only(self) -> Self {
        self.interfaces(MdnsInterfaces::Loopback)
    }

    /// Starts the mDNS daemon and the listener on the mDNS port (or, when the port
    /// cannot be shared, a browse of `_micro._tcp.local.`).
    pub fn build(self) -> Result<MdnsRegistry, Error> {
        let started = Instant::now();
        let interfaces = self.interfaces;
        let daemon = ServiceDaemon::new().map_err(backend)?;
        match &interfaces {
            MdnsInterfaces::All => {}
            MdnsInterfaces::Loopback => {
                daemon.disable_interface(IfKind::All).map_err(backend)?;
                daemon
                    .enable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])
                    .map_err(backend)?;
            }
            MdnsInterfaces::Named(names) => {
                daemon.disable_interface(IfKind::All).map_err(backend)?;
                let mut kinds: Vec<IfKind> = names.iter().cloned().map(IfKind::Name).collect();
                kinds.extend([IfKind::LoopbackV4, IfKind::LoopbackV6]);
                daemon.enable_interface(kinds).map_err(backend)?;
            }
        }
        let shared = Arc::new(Shared::new(DEFAULT_TTL, interfaces.clone()));
        let ips = interface_ips(&interfaces);
        let browsing = match listen::socket(&ips) {
            Ok(socket) => {
                let weak = Arc::downgrade(&shared);
                spawn("micro-mdns-listen", move || listen::run(socket, weak))?;
                if self.browse {
                    browse(&daemon, Arc::clone(&shared))?;
                }
                self.browse
            }
            // The port cannot be shared: mdns-sd's browse finds nodes instead, and
            // goodbyes a second later.
            Err(e) => {
                tracing::debug!(error = %e, "no passive mDNS listener; browsing instead");
                browse(&daemon, Arc::clone(&shared))?;
                true
            }
        };
        let weak = Arc::downgrade(&shared);
        let own = Arc::new(Mutex::new(HashMap::new()));
        let announcing = Arc::downgrade(&own);
        let selected = interfaces.clone();
        let announcer = daemon.clone();
        spawn("micro-mdns-query", move || {
            refresh_loop(selected, weak, announcing, announcer, started, browsing)
        })?;
        Ok(MdnsRegistry {
            inner: Arc::new(Inner {
                daemon,
                shared,
                started,
                interfaces,
                own,
            }),
        })
    }
}
