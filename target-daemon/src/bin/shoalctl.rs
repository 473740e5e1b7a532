//! `shoalctl`: the command-line client of `shoald`.
//!
//! It speaks the daemon's SPDK-compatible JSON-RPC over the Unix socket (`-s`, default
//! `/var/tmp/shoal.sock`). Commands mirror the RPC methods (`shoalctl bdev malloc create ...`
//! calls `bdev_malloc_create`; `shoalctl pool ...` and `shoalctl volume ...` the `bdev_lvol_*`
//! methods); results print as tables, or as the raw JSON result with `--json`.
//! `shoalctl rpc METHOD [PARAMS]` calls any method. Errors print one line on stderr (with the
//! daemon's message and code) and exit with status 1.

#[path = "shoalctl/cli.rs"]
mod cli;
#[path = "shoalctl/lvol.rs"]
mod lvol;
#[path = "shoalctl/nexus.rs"]
mod nexus;
#[path = "shoalctl/parse.rs"]
mod parse;
#[path = "shoalctl/show.rs"]
mod show;

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use cli::{
    BdevCmd, Cli, Cmd, ConfigCmd, DelayCmd, ErrorCmd, HostCmd, ListenerCmd, NsCmd, NvmfCmd,
    SizedCmd, SubsystemCmd, TransportCmd, UringCmd,
};
use serde_json::{Map, Value, json};
use shoal_target::config::ConfigDocument;
use shoal_target::rpc::RpcClient;
use shoal_target::rpc::params::is_housekeeping;
use shoal_target::rpc::params::nvmf::DISCOVERY_NQN;

/// What a command prints.
enum Out {
    /// The result, rendered by a function unless `--json`.
    Result(Value, fn(&Value) -> String),
    /// A line of text (with `--json`, the result instead).
    Line(Value, String),
}

struct Ctl {
    client: RpcClient,
}

impl Ctl {
    fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.client
            .call(method, Some(params))
            .map_err(|e| format!("{method}: {e}"))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shoalctl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<String, String> {
    let client = RpcClient::connect(&cli.socket).map_err(|e| e.to_string())?;
    client
        .set_timeout(Some(Duration::from_secs(cli.timeout.max(1))))
        .map_err(|e| e.to_string())?;
    let mut ctl = Ctl { client };
    let out = match cli.command {
        Cmd::Bdev(c) => bdev(&mut ctl, c)?,
        Cmd::Nvmf(c) => nvmf(&mut ctl, c)?,
        Cmd::Config(c) => return config(&mut ctl, c),
        Cmd::Pool(c) => {
            let (v, text) = lvol::pool(&mut |m, p| ctl.call(m, p), c)?;
            Out::Line(v, text.trim_end().to_owned())
        }
        Cmd::Volume(c) => {
            let (v, text) = lvol::volume(&mut |m, p| ctl.call(m, p), c)?;
            Out::Line(v, text.trim_end().to_owned())
        }
        Cmd::Nexus(c) => match nexus::run(&mut |m, p| ctl.call(m, p), c)? {
            nexus::NexusOut::Done(v, text) => Out::Line(v, text.trim_end().to_owned()),
            nexus::NexusOut::Printed => return Ok(String::new()),
        },
        Cmd::Rpc { method, params } => {
            let params = match params.as_deref() {
                None => json!({}),
                Some("-") => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .map_err(|e| format!("stdin: {e}"))?;
                    json_arg(&s)?
                }
                Some(p) => json_arg(p)?,
            };
            let v = ctl.call(&method, params)?;
            return pretty(&v);
        }
        Cmd::Version => {
            let v = ctl.call("spdk_get_version", json!({}))?;
            let line = show::field(&v, "version");
            Out::Line(v, line)
        }
        Cmd::Methods => Out::Result(ctl.call("rpc_get_methods", json!({}))?, |v| {
            v.as_array()
                .map(|a| a.iter().map(|m| format!("{}\n", show::text(m))).collect())
                .unwrap_or_default()
        }),
    };
    match out {
        _ if cli.json => pretty(match &out {
            Out::Result(v, _) | Out::Line(v, _) => v,
        }),
        Out::Result(v, render) => Ok(render(&v)),
        Out::Line(_, line) => Ok(format!("{line}\n")),
    }
}

fn pretty(v: &Value) -> Result<String, String> {
    serde_json::to_string_pretty(v)
        .map(|s| format!("{s}\n"))
        .map_err(|e| e.to_string())
}

fn json_arg(text: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("params are not JSON: {e}"))?;
    if !v.is_object() {
        return Err("params must be a JSON object".to_owned());
    }
    Ok(v)
}

/// Adds `key: value` to an object when `value` is `Some`.
fn opt(m: &mut Value, key: &str, value: Option<Value>) {
    if let (Value::Object(o), Some(v)) = (m, value) {
        o.insert(key.to_owned(), v);
    }
}

fn ok(v: Value, line: String) -> Out {
    Out::Line(v, line)
}

fn blocks(size: &str, block_size: u32) -> Result<u64, String> {
    let bytes = parse::size(size)?;
    let bs = u64::from(block_size.max(1));
    if bytes == 0 || bytes % bs != 0 {
        return Err(format!(
            "size {size} is not a non-zero multiple of the block size {block_size}"
        ));
    }
    Ok(bytes / bs)
}

fn bdev(ctl: &mut Ctl, c: BdevCmd) -> Result<Out, String> {
    Ok(match c {
        BdevCmd::List { name } => {
            let mut p = json!({});
            opt(&mut p, "name", name.map(Value::from));
            Out::Result(ctl.call("bdev_get_bdevs", p)?, show::bdevs)
        }
        BdevCmd::Malloc(SizedCmd::Create {
            name,
            size,
            block_size,
            uuid,
        }) => sized_create(ctl, "bdev_malloc_create", name, &size, block_size, uuid)?,
        BdevCmd::Null(SizedCmd::Create {
            name,
            size,
            block_size,
            uuid,
        }) => sized_create(ctl, "bdev_null_create", name, &size, block_size, uuid)?,
        BdevCmd::Uring(UringCmd::Create {
            name,
            path,
            block_size,
            uuid,
        }) => {
            let mut p = json!({"name": name, "filename": path});
            opt(&mut p, "block_size", block_size.map(Value::from));
            opt(&mut p, "uuid", uuid.map(Value::from));
            let v = ctl.call("bdev_uring_create", p)?;
            let line = format!("created bdev {}", show::text(&v));
            ok(v, line)
        }
        BdevCmd::Malloc(SizedCmd::Delete { name })
        | BdevCmd::Null(SizedCmd::Delete { name })
        | BdevCmd::Uring(UringCmd::Delete { name })
        | BdevCmd::Error(ErrorCmd::Delete { name })
        | BdevCmd::Delay(DelayCmd::Delete { name })
        | BdevCmd::Delete { name } => delete_any(ctl, &name)?,
        BdevCmd::Error(e) => error_cmd(ctl, e)?,
        BdevCmd::Delay(d) => delay_cmd(ctl, d)?,
        BdevCmd::Iostat { names } => {
            let p = if names.is_empty() {
                json!({})
            } else {
                json!({"names": names})
            };
            Out::Result(ctl.call("bdev_get_iostat", p)?, show::iostat)
        }
    })
}

fn sized_create(
    ctl: &mut Ctl,
    method: &str,
    name: String,
    size: &str,
    block_size: u32,
    uuid: Option<String>,
) -> Result<Out, String> {
    let mut p = json!({"name": name, "num_blocks": blocks(size, block_size)?,
                       "block_size": block_size});
    opt(&mut p, "uuid", uuid.map(Value::from));
    let v = ctl.call(method, p)?;
    let line = format!("created bdev {}", show::text(&v));
    Ok(ok(v, line))
}

/// Deletes a bdev with the method of its kind (found from its product name).
fn delete_any(ctl: &mut Ctl, name: &str) -> Result<Out, String> {
    let info = ctl.call("bdev_get_bdevs", json!({"name": name}))?;
    let product = info
        .get(0)
        .map(|b| show::field(b, "product_name"))
        .unwrap_or_default();
    let method = match product.as_str() {
        "Malloc disk" => "bdev_malloc_delete",
        "Null disk" => "bdev_null_delete",
        "URING bdev" => "bdev_uring_delete",
        "Error Injection Disk" => "bdev_error_delete",
        "delay" => "bdev_delay_delete",
        other => {
            return Err(format!(
                "bdev {name}: do not know how to delete a `{other}` bdev"
            ));
        }
    };
    let v = ctl.call(method, json!({"name": name}))?;
    Ok(ok(v, format!("deleted bdev {name}")))
}

fn error_cmd(ctl: &mut Ctl, c: ErrorCmd) -> Result<Out, String> {
    Ok(match c {
        ErrorCmd::Create { base, uuid } => {
            let mut p = json!({"base_name": base});
            opt(&mut p, "uuid", uuid.map(Value::from));
            let v = ctl.call("bdev_error_create", p)?;
            ok(v, format!("created bdev EE_{base}"))
        }
        ErrorCmd::Inject {
            name,
            io_type,
            error_type,
            num,
            corrupt_offset,
            corrupt_value,
        } => {
            let mut p = json!({"name": name, "io_type": io_type, "error_type": error_type,
                               "num": num});
            opt(&mut p, "corrupt_offset", corrupt_offset.map(Value::from));
            opt(&mut p, "corrupt_value", corrupt_value.map(Value::from));
            let v = ctl.call("bdev_error_inject_error", p)?;
            ok(v, format!("injected {error_type} on {io_type} of {name}"))
        }
        ErrorCmd::Clear { name } => {
            let p = json!({"name": name, "io_type": "clear", "error_type": "failure"});
            let v = ctl.call("bdev_error_inject_error", p)?;
            ok(v, format!("cleared injections of {name}"))
        }
        ErrorCmd::Delete { name } => delete_any(ctl, &name)?,
    })
}

fn delay_cmd(ctl: &mut Ctl, c: DelayCmd) -> Result<Out, String> {
    Ok(match c {
        DelayCmd::Create {
            name,
            base,
            read_latency,
            write_latency,
            p99_read_latency,
            p99_write_latency,
            uuid,
        } => {
            let mut p = json!({
                "name": name, "base_bdev_name": base,
                "avg_read_latency": read_latency,
                "p99_read_latency": p99_read_latency.unwrap_or(read_latency),
                "avg_write_latency": write_latency,
                "p99_write_latency": p99_write_latency.unwrap_or(write_latency),
            });
            opt(&mut p, "uuid", uuid.map(Value::from));
            let v = ctl.call("bdev_delay_create", p)?;
            let line = format!("created bdev {}", show::text(&v));
            ok(v, line)
        }
        DelayCmd::Update {
            name,
            latency_type,
            latency_us,
        } => {
            let p = json!({"delay_bdev_name": name, "latency_type": latency_type,
                           "latency_us": latency_us});
            let v = ctl.call("bdev_delay_update_latency", p)?;
            ok(
                v,
                format!("{name}: {latency_type} latency set to {latency_us} us"),
            )
        }
        DelayCmd::Delete { name } => delete_any(ctl, &name)?,
    })
}

/// `discovery` stands for the discovery subsystem's NQN, as in `rpc.py`.
fn nqn_arg(nqn: &str) -> &str {
    if nqn == "discovery" {
        DISCOVERY_NQN
    } else {
        nqn
    }
}

fn listen_params(nqn: &str, address: &str) -> Result<Value, String> {
    let a = parse::address(address)?;
    Ok(json!({"nqn": nqn_arg(nqn), "listen_address": {
        "trtype": "TCP", "adrfam": a.adrfam, "traddr": a.traddr, "trsvcid": a.trsvcid}}))
}

fn nvmf(ctl: &mut Ctl, c: NvmfCmd) -> Result<Out, String> {
    Ok(match c {
        NvmfCmd::Transport(TransportCmd::Create {
            max_queue_depth,
            max_io_qpairs_per_ctrlr,
            in_capsule_data_size,
            max_io_size,
            max_aq_depth,
            acceptor_backlog,
            max_unsent_bytes,
            ic_timeout_ms,
            max_connections_per_listener,
            max_connections_per_host,
        }) => {
            let mut p = json!({"trtype": "TCP"});
            opt(&mut p, "max_queue_depth", max_queue_depth.map(Value::from));
            opt(
                &mut p,
                "max_io_qpairs_per_ctrlr",
                max_io_qpairs_per_ctrlr.map(Value::from),
            );
            opt(
                &mut p,
                "in_capsule_data_size",
                in_capsule_data_size.map(Value::from),
            );
            opt(&mut p, "max_io_size", max_io_size.map(Value::from));
            opt(&mut p, "max_aq_depth", max_aq_depth.map(Value::from));
            for (k, v) in [
                ("acceptor_backlog", acceptor_backlog),
                ("max_unsent_bytes", max_unsent_bytes),
                ("ic_timeout_ms", ic_timeout_ms),
                ("max_connections_per_listener", max_connections_per_listener),
                ("max_connections_per_host", max_connections_per_host),
            ] {
                opt(&mut p, k, v.map(Value::from));
            }
            let v = ctl.call("nvmf_create_transport", p)?;
            ok(v, "created the TCP transport".to_owned())
        }
        NvmfCmd::Transport(TransportCmd::List) => {
            Out::Result(ctl.call("nvmf_get_transports", json!({}))?, |v| {
                v.as_array()
                    .map(|a| a.iter().map(show::object).collect::<Vec<_>>().join("\n"))
                    .unwrap_or_default()
            })
        }
        NvmfCmd::Subsystem(s) => subsystem_cmd(ctl, s)?,
        NvmfCmd::Ns(NsCmd::Add {
            nqn,
            bdev,
            nsid,
            uuid,
            nguid,
            eui64,
        }) => {
            let mut ns = json!({"bdev_name": bdev});
            opt(&mut ns, "nsid", nsid.map(Value::from));
            opt(&mut ns, "uuid", uuid.map(Value::from));
            opt(
                &mut ns,
                "nguid",
                nguid.map(|h| Value::from(h.replace('-', ""))),
            );
            opt(
                &mut ns,
                "eui64",
                eui64.map(|h| Value::from(h.replace('-', ""))),
            );
            let v = ctl.call(
                "nvmf_subsystem_add_ns",
                json!({"nqn": nqn, "namespace": ns}),
            )?;
            let line = format!("added namespace {} ({bdev}) to {nqn}", show::text(&v));
            ok(v, line)
        }
        NvmfCmd::Ns(NsCmd::Remove { nqn, nsid }) => {
            let v = ctl.call(
                "nvmf_subsystem_remove_ns",
                json!({"nqn": nqn, "nsid": nsid}),
            )?;
            ok(v, format!("removed namespace {nsid} from {nqn}"))
        }
        NvmfCmd::Listener(ListenerCmd::Add { nqn, address }) => {
            let v = ctl.call(
                "nvmf_subsystem_add_listener",
                listen_params(&nqn, &address)?,
            )?;
            ok(v, format!("{} listens on {address}", nqn_arg(&nqn)))
        }
        NvmfCmd::Listener(ListenerCmd::Remove { nqn, address }) => {
            let v = ctl.call(
                "nvmf_subsystem_remove_listener",
                listen_params(&nqn, &address)?,
            )?;
            ok(
                v,
                format!("{} no longer listens on {address}", nqn_arg(&nqn)),
            )
        }
        NvmfCmd::Listener(ListenerCmd::List { nqn }) => {
            let p = json!({"nqn": nqn_arg(&nqn)});
            Out::Result(
                ctl.call("nvmf_subsystem_get_listeners", p)?,
                show::listeners,
            )
        }
        NvmfCmd::Host(HostCmd::Add { nqn, host }) => {
            let v = ctl.call("nvmf_subsystem_add_host", json!({"nqn": nqn, "host": host}))?;
            ok(v, format!("{nqn} allows {host}"))
        }
        NvmfCmd::Host(HostCmd::Remove { nqn, host }) => {
            let v = ctl.call(
                "nvmf_subsystem_remove_host",
                json!({"nqn": nqn, "host": host}),
            )?;
            ok(v, format!("{nqn} no longer allows {host}"))
        }
        NvmfCmd::Controllers { nqn } => {
            let p = json!({"nqn": nqn_arg(&nqn)});
            Out::Result(
                ctl.call("nvmf_subsystem_get_controllers", p)?,
                show::controllers,
            )
        }
        NvmfCmd::Qpairs { nqn } => {
            let p = json!({"nqn": nqn_arg(&nqn)});
            Out::Result(ctl.call("nvmf_subsystem_get_qpairs", p)?, show::qpairs)
        }
        NvmfCmd::Stats => Out::Result(ctl.call("nvmf_get_stats", json!({}))?, show::stats),
    })
}

fn subsystem_cmd(ctl: &mut Ctl, c: SubsystemCmd) -> Result<Out, String> {
    Ok(match c {
        SubsystemCmd::Create {
            nqn,
            allow_any_host,
            serial,
            model,
            max_namespaces,
        } => {
            let mut p = json!({"nqn": nqn, "allow_any_host": allow_any_host});
            opt(&mut p, "serial_number", serial.map(Value::from));
            opt(&mut p, "model_number", model.map(Value::from));
            opt(&mut p, "max_namespaces", max_namespaces.map(Value::from));
            let v = ctl.call("nvmf_create_subsystem", p)?;
            ok(v, format!("created subsystem {nqn}"))
        }
        SubsystemCmd::List { nqn } => {
            let mut p = json!({});
            opt(&mut p, "nqn", nqn.map(|n| Value::from(nqn_arg(&n))));
            Out::Result(ctl.call("nvmf_get_subsystems", p)?, show::subsystems)
        }
        SubsystemCmd::Delete { nqn } => {
            let v = ctl.call("nvmf_delete_subsystem", json!({"nqn": nqn}))?;
            ok(v, format!("deleted subsystem {nqn}"))
        }
        SubsystemCmd::AllowAnyHost { nqn, setting } => {
            let allow = setting == "on";
            let p = json!({"nqn": nqn, "allow_any_host": allow});
            let v = ctl.call("nvmf_subsystem_allow_any_host", p)?;
            ok(v, format!("{nqn}: allow any host {setting}"))
        }
    })
}

fn config(ctl: &mut Ctl, c: ConfigCmd) -> Result<String, String> {
    match c {
        ConfigCmd::Save { file } => {
            let doc = ctl.call("save_config", json!({}))?;
            let text = pretty(&doc)?;
            match file {
                None => Ok(text),
                Some(path) => {
                    std::fs::write(&path, text)
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                    Ok(String::new())
                }
            }
        }
        ConfigCmd::Load { file } => {
            let doc = ConfigDocument::load(&file).map_err(|e| e.to_string())?;
            let served: Vec<String> = ctl
                .call("rpc_get_methods", json!({}))?
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|m| m.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let plan = doc
                .plan(|m| served.iter().any(|s| s == m))
                .map_err(|e| e.to_string())?;
            for call in &plan.apply {
                let params = call
                    .params
                    .clone()
                    .unwrap_or_else(|| Value::Object(Map::new()));
                ctl.call(&call.method, params)
                    .map_err(|e| format!("{} config[{}]: {e}", call.subsystem, call.index))?;
            }
            let skipped = plan
                .ignored
                .iter()
                .filter(|c| is_housekeeping(&c.method))
                .count();
            Ok(format!(
                "applied {} call(s), skipped {skipped} SPDK-only call(s)\n",
                plan.apply.len()
            ))
        }
    }
}
