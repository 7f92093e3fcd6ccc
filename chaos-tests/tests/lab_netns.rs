//! The network lab for real: namespaces and bridge come up, a node's address is reachable from
//! the root namespace, a partition cuts exactly the traffic it should, healing restores it,
//! and dropping the lab removes everything. Needs root (CI is root); prints
//! "skipped: needs root" otherwise.

use std::process::Command;

use starling_chaos::lab::{self, Lab, PREFIX};
use starling_chaos::schedule::Fault;

/// Whether a TCP connection from namespace `from_ns` to `addr:port` succeeds within 1 s.
fn connects(from_ns: &str, addr: &str, port: u16) -> bool {
    let script = format!(
        "import socket,sys\ns=socket.socket()\ns.settimeout(1)\ntry:\n  s.connect(('{addr}',{port}))\nexcept Exception:\n  sys.exit(1)\n"
    );
    Command::new("ip")
        .args(["netns", "exec", from_ns, "python3", "-c", &script])
        .status()
        .expect("ip netns exec python3")
        .success()
}

/// A listener inside namespace `ns` on `port` (python3, killed on drop).
struct Listener(std::process::Child);

impl Listener {
    fn start(ns: &str, addr: &str, port: u16) -> Listener {
        let script = format!(
            "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('{addr}',{port}))\ns.listen(64)\nwhile True:\n  c,_=s.accept()\n  c.close()\n"
        );
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", &script])
            .spawn()
            .expect("listener");
        // Ready once it accepts inside its own namespace (python3 may start slowly on a busy
        // machine; a fixed pause made this test flaky).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !connects(ns, addr, port) {
            assert!(
                std::time::Instant::now() < deadline,
                "listener in {ns} on {addr}:{port} did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Listener(child)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn namespaces_partitions_heal_and_teardown() {
    if !lab::is_root() {
        println!("skipped: needs root");
        return;
    }
    let lab = Lab::setup(&[1, 2, 3]).expect("lab");
    let (n1, n2, n3) = (lab::netns_name(1), lab::netns_name(2), lab::netns_name(3));
    let _l2 = Listener::start(&n2, &lab::node_addr(2), 7000);
    let _l3 = Listener::start(&n3, &lab::node_addr(3), 7000);
    // The root namespace reaches node 2, and node 1 reaches node 2 over the bridge.
    assert!(std::net::TcpStream::connect((lab::node_addr(2).as_str(), 7000)).is_ok());
    assert!(connects(&n1, &lab::node_addr(2), 7000));

    lab.apply_network_fault(&Fault::Isolate { node: 1 })
        .expect("isolate");
    assert!(
        !connects(&n1, &lab::node_addr(2), 7000),
        "isolated node reached a peer"
    );
    assert!(
        connects(&n3, &lab::node_addr(2), 7000),
        "the others must still see each other"
    );
    lab.heal_network();
    assert!(
        connects(&n1, &lab::node_addr(2), 7000),
        "heal did not restore traffic"
    );

    lab.apply_network_fault(&Fault::OneWay {
        from: 1,
        to: vec![2, 3],
    })
    .expect("one-way");
    assert!(
        !connects(&n1, &lab::node_addr(3), 7000),
        "one-way: 1 must not reach 3"
    );
    lab.heal_network();

    drop(lab);
    let left = String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(!left.contains(PREFIX), "namespaces left behind: {left}");
    let links = String::from_utf8(
        Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(!links.contains(&format!("{PREFIX}-")), "links left behind");
}
