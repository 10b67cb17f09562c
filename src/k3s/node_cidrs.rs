//! The node sources the CIS NetworkPolicies admit (`cis_netpol_node_cidrs`),
//! read from the cluster itself: traffic another node sends to a pod
//! (NodePort, hostNetwork processes, the apiserver calling a webhook) leaves
//! that node with the address of its flannel interface, the first address of
//! its pod CIDR (flannel's vxlan backend configures `flannel.1` with the
//! lease's subnet IP as a /32, and `flannel-v6.1` with it as a /128:
//! flannel-io/flannel pkg/backend/vxlan/vxlan.go), or, with the host-gw
//! backend, with its own InternalIP. Those addresses are never given to a
//! pod, so admitting them keeps every other pod of the cluster out, which
//! the pod network as a whole (`10.42.0.0/16`) does not.

use std::net::IpAddr;

use serde_json::Value;

/// The role variable, and the word that asks khard to derive it.
pub const VARIABLE: &str = "cis_netpol_node_cidrs";
pub const AUTO: &str = "auto";

/// The probe's fact: on a server whose API answers, every node's pod CIDRs
/// and InternalIPs on one line (kubectl's jsonpath); nothing elsewhere.
/// `k3s kubectl` reads the admin kubeconfig a server writes,
/// /etc/rancher/k3s/k3s.yaml (k3s pkg/kubectl/main.go: HomeKubeConfig), so
/// a node without it (an agent) is not asked ([`FACT_NEEDS`], tested by the
/// probe's own shell: no process there). `exec`: the fact's subshell
/// becomes k3s.
pub const FACT: &str = "k3s_node_addresses";
pub const FACT_NEEDS: &str = "/etc/rancher/k3s/k3s.yaml";
pub const FACT_COMMAND: &str = "command -v k3s >/dev/null 2>&1 && exec k3s kubectl get nodes --request-timeout=10s -o 'jsonpath={range .items[*]}{.spec.podCIDRs[*]} {.status.addresses[?(@.type==\"InternalIP\")].address} {end}'";

/// Why the node sources are unknown on a host, for the task that needs them.
pub const UNKNOWN_REASON: &str = "k3s_node_cidrs_unknown";

/// The stand-in list the preflight renders with before any node answered.
pub fn preflight_value() -> Value {
    Value::from(vec!["10.42.0.0/32"])
}

/// The admitted sources from kubectl's answer: the first address of each
/// pod CIDR and each InternalIP, as /32 (IPv4) or /128 (IPv6), sorted and
/// without repeats. An empty or unreadable answer is no answer: Err says why.
pub fn derive(answer: Option<&str>) -> Result<Vec<String>, String> {
    let answer = answer.map(str::trim).unwrap_or_default();
    if answer.is_empty() {
        return Err("the cluster's API did not answer `k3s kubectl get nodes` on this server (k3s stopped, or not a server)".into());
    }
    let mut addresses: Vec<IpAddr> = Vec::new();
    for word in answer.split_whitespace() {
        let address = match word.split_once('/') {
            Some((ip, bits)) => {
                let ip: IpAddr = ip.parse().map_err(|_| implausible(word))?;
                let bits: u8 = bits.parse().map_err(|_| implausible(word))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                if bits > max {
                    return Err(implausible(word));
                }
                network(ip, bits)
            }
            None => word.parse().map_err(|_| implausible(word))?,
        };
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    addresses.sort();
    Ok(addresses
        .iter()
        .map(|a| match a {
            IpAddr::V4(_) => format!("{a}/32"),
            IpAddr::V6(_) => format!("{a}/128"),
        })
        .collect())
}

fn implausible(word: &str) -> String {
    format!(
        "`k3s kubectl get nodes` answered `{}`, which is neither an address nor a CIDR",
        crate::terminal::one_line(word)
    )
}

/// The network address of `ip/bits` (its first address).
fn network(ip: IpAddr, bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            IpAddr::from((u32::from(v4) & mask).to_be_bytes())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            IpAddr::from((u128::from(v6) & mask).to_be_bytes())
        }
    }
}

/// Refuses, before any host is contacted, a value that is neither `auto`
/// nor a list of CIDRs.
pub fn check(value: &Value) -> Result<(), String> {
    if value.as_str() == Some(AUTO) {
        return Ok(());
    }
    let list = value.as_array().ok_or_else(|| {
        format!("{VARIABLE} must be `{AUTO}` (the nodes' addresses, read from the cluster) or a list of CIDRs")
    })?;
    for item in list {
        let text = item.as_str().unwrap_or_default();
        let valid = text.split_once('/').is_some_and(|(ip, bits)| {
            let max = match ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => 32,
                Ok(IpAddr::V6(_)) => 128,
                Err(_) => return false,
            };
            bits.parse::<u8>().is_ok_and(|b| b <= max)
        });
        if !valid {
            return Err(format!(
                "{VARIABLE}: `{}` is not a CIDR such as 10.42.0.0/32",
                crate::terminal::one_line(&item.to_string())
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cidrs_give_their_first_address_and_node_ips_themselves() {
        let got = derive(Some(
            "10.42.1.0/24 192.168.1.11 10.42.0.0/24 192.168.1.10 \n",
        ))
        .unwrap();
        assert_eq!(
            got,
            [
                "10.42.0.0/32",
                "10.42.1.0/32",
                "192.168.1.10/32",
                "192.168.1.11/32"
            ]
        );
        // Dual stack: both families; a host-bits-set CIDR is reduced.
        let got = derive(Some(
            "10.52.3.7/24 2001:cafe:42:3::/64 fd00::11 10.52.3.0/24",
        ))
        .unwrap();
        assert_eq!(
            got,
            ["10.52.3.0/32", "2001:cafe:42:3::/128", "fd00::11/128"]
        );
    }

    #[test]
    fn no_answer_or_an_implausible_one_is_unknown() {
        assert!(derive(None).unwrap_err().contains("did not answer"));
        assert!(derive(Some("  ")).unwrap_err().contains("did not answer"));
        for bad in ["10.42.0.0/33", "error:", "10.42.0.0/24 $(reboot)", "::/129"] {
            assert!(derive(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_variable_is_auto_or_a_list_of_cidrs() {
        assert!(check(&Value::from("auto")).is_ok());
        assert!(check(&serde_json::json!(["10.42.0.0/32", "fd00::/128"])).is_ok());
        for bad in [
            serde_json::json!("10.42.0.0/16"),
            serde_json::json!(["10.42.0.0"]),
            serde_json::json!(["10.42.0.0/33"]),
            serde_json::json!(["$(reboot)/32"]),
            serde_json::json!([42]),
            serde_json::json!("Auto"),
        ] {
            assert!(check(&bad).is_err(), "{bad}");
        }
    }
}
