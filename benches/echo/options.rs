//! Options of `cargo bench --bench echo -- [options]`.

pub const USAGE: &str = "\
usage: cargo bench --bench echo -- [options]

  --quick                 a reduced matrix that finishes in a few minutes
  --servers LIST          comma-separated: tokio, uring, epoll, stdnet (gnet-epoll etc. also
                          accepted); default: all
  --conns LIST            connection counts (default 50,1000,10000)
  --sizes LIST            message sizes in bytes (default 64,512,16384)
  --pipelines LIST        messages in flight per connection (default 1,16)
  --repeats N             rounds; each round runs every server once per point (default 3)
  --duration SECS         measured window of each run (default 3)
  --warmup SECS           load before each window, at least (default 1; the window
                          also waits until every connection has had a few echoes)
  --rate-fraction F       fixed-rate runs use F x the reference server's median
                          saturation throughput (default 0.5); the reference is tokio
                          when it runs, else the first server
  --idle-conns N          connections of the idle-memory run (default 10000; 0 skips it)
  --idle-hold SECS        how long the idle connections are held before RSS is read (default 2)
  --loops N               event loops / threads of every server (default 1)
  --no-pin                do not pin the server to core 0 and the load to core 1
  --server-cpu F          cap every server at F (0 < F < 1) of one core with a CPU-bandwidth
                          cgroup (needs root), so that the server, not the one-core load
                          generator, limits saturation runs; fixed-rate runs are skipped
  --net loopback|veth     loopback (default), or veth: the load generator in a network
                          namespace behind a veth pair, each side's packets received on its
                          own core (needs root and iproute2); CPU per message is then the
                          busy time of the server's core, which includes that receive work
  --proto tcp|udp         tcp (default), or udp: gnet's udp_echo and tokio_echo's UDP mode,
                          each connection a connected UDP socket of the load generator
                          (no idle-memory run; datagrams lost are counted and reported)
  --out DIR               where results.md and the SVG charts go, relative to the
                          workspace (default target/bench-results, or
                          target/bench-results/udp with --proto udp: a run rewrites the
                          committed bench-results/ only when asked to, with --out)
";

pub struct Options {
    pub servers: Option<Vec<String>>,
    pub conns: Vec<usize>,
    pub sizes: Vec<usize>,
    pub pipelines: Vec<u64>,
    pub repeats: usize,
    pub duration: f64,
    pub warmup: f64,
    pub rate_fraction: f64,
    pub idle_conns: usize,
    pub idle_hold: f64,
    pub loops: usize,
    pub pin: bool,
    pub server_cpu: Option<f64>,
    /// `--net veth`.
    pub veth: bool,
    /// `--proto udp`.
    pub udp: bool,
    pub out: String,
}

fn list<T: std::str::FromStr>(flag: &str, text: &str) -> Result<Vec<T>, String> {
    text.split(',')
        .map(|v| {
            v.trim()
                .replace('_', "")
                .parse()
                .map_err(|_| format!("{flag}: bad value {v:?}"))
        })
        .collect()
}

fn one<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{flag}: bad value {text:?}"))
}

/// The canonical server name: `tokio`, `uring`, `epoll` or `stdnet`.
pub fn canonical(name: &str) -> String {
    name.trim().trim_start_matches("gnet-").to_string()
}

pub fn parse(argv: Vec<String>) -> Result<Options, String> {
    let quick = argv.iter().any(|a| a == "--quick");
    let mut o = Options {
        servers: None,
        conns: if quick {
            vec![50, 1000]
        } else {
            vec![50, 1000, 10_000]
        },
        sizes: if quick {
            vec![64, 512]
        } else {
            vec![64, 512, 16_384]
        },
        pipelines: vec![1, 16],
        repeats: if quick { 2 } else { 3 },
        duration: if quick { 0.6 } else { 3.0 },
        warmup: if quick { 0.2 } else { 1.0 },
        rate_fraction: 0.5,
        idle_conns: 10_000,
        idle_hold: if quick { 0.5 } else { 2.0 },
        loops: 1,
        pin: true,
        server_cpu: None,
        veth: false,
        udp: false,
        out: String::new(),
    };
    let mut it = argv.into_iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            // `cargo bench` appends `--bench` to the arguments of every bench target.
            "--bench" | "--quick" => continue,
            "--no-pin" => {
                o.pin = false;
                continue;
            }
            "-h" | "--help" => return Err(String::new()),
            _ => {}
        }
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--servers" => o.servers = Some(v.split(',').map(canonical).collect()),
            "--conns" => o.conns = list(&flag, &v)?,
            "--sizes" => o.sizes = list(&flag, &v)?,
            "--pipelines" => o.pipelines = list(&flag, &v)?,
            "--repeats" => o.repeats = one(&flag, &v)?,
            "--duration" => o.duration = one(&flag, &v)?,
            "--warmup" => o.warmup = one(&flag, &v)?,
            "--rate-fraction" => o.rate_fraction = one(&flag, &v)?,
            "--idle-conns" => o.idle_conns = one(&flag, &v)?,
            "--idle-hold" => o.idle_hold = one(&flag, &v)?,
            "--loops" => o.loops = one(&flag, &v)?,
            "--server-cpu" => o.server_cpu = Some(one(&flag, &v)?),
            "--net" => {
                o.veth = match v.as_str() {
                    "loopback" => false,
                    "veth" => true,
                    _ => return Err(format!("--net: {v:?} is neither loopback nor veth")),
                }
            }
            "--proto" => {
                o.udp = match v.as_str() {
                    "tcp" => false,
                    "udp" => true,
                    _ => return Err(format!("--proto: {v:?} is neither tcp nor udp")),
                }
            }
            "--out" => o.out = v,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if o.out.is_empty() {
        o.out = if o.udp {
            "target/bench-results/udp"
        } else {
            "target/bench-results"
        }
        .to_string();
    }
    if o.udp {
        // Idle memory is about held connections; a datagram server holds none.
        o.idle_conns = 0;
        if o.veth {
            return Err("--proto udp runs on loopback only".into());
        }
    }
    if o.repeats == 0 || o.conns.is_empty() || o.sizes.is_empty() || o.pipelines.is_empty() {
        return Err("--repeats and the --conns/--sizes/--pipelines lists must not be empty".into());
    }
    if !(o.rate_fraction > 0.0 && o.rate_fraction <= 1.0) {
        return Err("--rate-fraction must be in (0, 1]".into());
    }
    Ok(o)
}
