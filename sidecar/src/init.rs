//! `portico-sidecar init`: istio-init's job. Redirects the pod's inbound TCP
//! to the sidecar's 15006 with iptables' nat table, except the sidecar's own
//! ports (15001, 15006, 15020, 15021, 15090) and any port given; loopback
//! traffic (the sidecar's own connection to the notebook) is not touched.
//! With `--capture-outbound`, the pod's outbound TCP goes to the sidecar's
//! 15001 (ISTIO_OUTPUT / ISTIO_REDIRECT), except the sidecar's own (uid and
//! gid 1337), loopback and any port given.
//!
//! The nat table of the pod's network namespace is written whole with
//! `iptables-restore`, so running it twice gives the same rules.

use std::io::Write as _;
use std::process::{Command, Stdio};

/// Ports never redirected: the sidecar's own.
pub const SIDECAR_PORTS: [u16; 5] = [15001, 15006, 15020, 15021, 15090];

#[derive(Clone, Debug, clap::Args)]
pub struct InitArgs {
    /// Where inbound traffic is redirected.
    #[arg(long, env = "PORTICO_INBOUND_PORT", default_value_t = 15006)]
    pub inbound_port: u16,

    /// Further inbound ports left alone (comma-separated).
    #[arg(long, env = "PORTICO_EXCLUDE_INBOUND_PORTS", value_delimiter = ',')]
    pub exclude_inbound_ports: Vec<u16>,

    /// The sidecar's uid: its own connections are never redirected.
    #[arg(long, env = "PORTICO_PROXY_UID", default_value_t = 1337)]
    pub proxy_uid: u32,

    /// The sidecar's gid (default: the uid).
    #[arg(long, env = "PORTICO_PROXY_GID")]
    pub proxy_gid: Option<u32>,

    /// Redirect the pod's outbound TCP to the sidecar's outbound port.
    #[arg(long, env = "PORTICO_CAPTURE_OUTBOUND")]
    pub capture_outbound: bool,

    /// Where outbound traffic is redirected.
    #[arg(long, env = "PORTICO_OUTBOUND_PORT", default_value_t = 15001)]
    pub outbound_port: u16,

    /// Outbound destination ports left alone (comma-separated).
    #[arg(long, env = "PORTICO_EXCLUDE_OUTBOUND_PORTS", value_delimiter = ',')]
    pub exclude_outbound_ports: Vec<u16>,

    /// Print the rules instead of applying them.
    #[arg(long)]
    pub dry_run: bool,

    /// The iptables-restore to run (iptables-nft-restore, iptables-legacy-restore...).
    #[arg(long, env = "PORTICO_IPTABLES_RESTORE", default_value = "iptables-restore")]
    pub iptables_restore: String,
}

/// The nat table, in iptables-restore format.
pub fn rules(args: &InitArgs) -> String {
    let mut excluded: Vec<u16> = SIDECAR_PORTS.to_vec();
    excluded.push(args.inbound_port);
    excluded.extend(&args.exclude_inbound_ports);
    excluded.sort_unstable();
    excluded.dedup();
    let mut rules = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
         :ISTIO_INBOUND - [0:0]\n:ISTIO_IN_REDIRECT - [0:0]\n",
    );
    if args.capture_outbound {
        rules.push_str(":ISTIO_OUTPUT - [0:0]\n:ISTIO_REDIRECT - [0:0]\n");
    }
    rules.push_str("-A PREROUTING -p tcp -j ISTIO_INBOUND\n");
    for port in excluded {
        rules.push_str(&format!("-A ISTIO_INBOUND -p tcp --dport {port} -j RETURN\n"));
    }
    rules.push_str("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT\n");
    rules.push_str(&format!("-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}\n", args.inbound_port));
    if args.capture_outbound {
        outbound_rules(args, &mut rules);
    }
    rules.push_str("COMMIT\n");
    rules
}

/// ISTIO_OUTPUT: everything the pod sends goes to the outbound port, but the
/// sidecar's own connections (else they would loop), loopback traffic (the
/// sidecar reaching the notebook, the notebook reaching itself) and the
/// excluded ports.
fn outbound_rules(args: &InitArgs, rules: &mut String) {
    let gid = args.proxy_gid.unwrap_or(args.proxy_uid);
    rules.push_str("-A OUTPUT -p tcp -j ISTIO_OUTPUT\n");
    rules.push_str(&format!("-A ISTIO_OUTPUT -m owner --uid-owner {} -j RETURN\n", args.proxy_uid));
    rules.push_str(&format!("-A ISTIO_OUTPUT -m owner --gid-owner {gid} -j RETURN\n"));
    rules.push_str("-A ISTIO_OUTPUT -o lo -j RETURN\n-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN\n");
    let mut excluded = args.exclude_outbound_ports.clone();
    excluded.sort_unstable();
    excluded.dedup();
    for port in excluded {
        rules.push_str(&format!("-A ISTIO_OUTPUT -p tcp --dport {port} -j RETURN\n"));
    }
    rules.push_str("-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n");
    rules.push_str(&format!("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {}\n", args.outbound_port));
}

/// Prints or applies the rules.
pub fn run(args: &InitArgs) -> anyhow::Result<()> {
    let rules = rules(args);
    if args.dry_run {
        print!("{rules}");
        return Ok(());
    }
    let mut child = Command::new(&args.iptables_restore)
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| anyhow::anyhow!("running {}: {error}", args.iptables_restore))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(rules.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        anyhow::bail!(
            "{} failed ({}): {}\nrules:\n{rules}",
            args.iptables_restore,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let outbound = if args.capture_outbound { format!(", outbound to {}", args.outbound_port) } else { String::new() };
    eprintln!("portico-sidecar init: inbound TCP redirected to {}{outbound} (nat table written)", args.inbound_port);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_is_redirected_except_the_sidecars_ports() {
        let args = InitArgs {
            inbound_port: 15006,
            exclude_inbound_ports: vec![22, 15090],
            proxy_uid: 1337,
            proxy_gid: None,
            capture_outbound: false,
            outbound_port: 15001,
            exclude_outbound_ports: vec![],
            dry_run: true,
            iptables_restore: "iptables-restore".to_string(),
        };
        let rules = rules(&args);
        assert!(!rules.contains("ISTIO_OUTPUT"), "no outbound capture unless asked: {rules}");
        assert!(rules.starts_with("*nat\n") && rules.ends_with("COMMIT\n"), "{rules}");
        for port in [22, 15006, 15020, 15021, 15090] {
            assert_eq!(rules.matches(&format!("--dport {port} -j RETURN")).count(), 1, "{rules}");
        }
        assert!(rules.contains("-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006\n"), "{rules}");
        assert!(rules.find("--dport 22").unwrap() < rules.find("-j ISTIO_IN_REDIRECT\n").unwrap());
    }

    #[test]
    fn outbound_goes_to_15001_except_the_sidecars_own_and_loopback() {
        let args = InitArgs {
            inbound_port: 15006,
            exclude_inbound_ports: vec![],
            proxy_uid: 1337,
            proxy_gid: None,
            capture_outbound: true,
            outbound_port: 15001,
            exclude_outbound_ports: vec![5432],
            dry_run: true,
            iptables_restore: "iptables-restore".to_string(),
        };
        let rules = rules(&args);
        let position = |rule: &str| rules.find(rule).unwrap_or_else(|| panic!("{rule:?} missing from\n{rules}"));
        let redirect = position("-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n");
        for exempt in
            ["--uid-owner 1337 -j RETURN", "--gid-owner 1337 -j RETURN", "-o lo -j RETURN", "--dport 5432 -j RETURN"]
        {
            assert!(position(exempt) < redirect, "{exempt} must come before the redirect:\n{rules}");
        }
        assert!(rules.contains("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001\n"), "{rules}");
        assert!(rules.contains("-A ISTIO_INBOUND -p tcp --dport 15001 -j RETURN\n"), "{rules}");
    }
}
