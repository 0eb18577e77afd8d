//! Unit tests: detection, each kind's settings and defaults, every error path. Agreement with the real peers
//! on random files is in `tests/e2e/ringconf.rs`.

use hashring::{Hash, Router};

use crate::{detect, parse, Error, Kind};

fn err(text: &str, cluster: Option<&str>) -> String {
    let message = parse(text, cluster).expect_err(text).to_string();
    assert!(!message.contains('\n'), "one line: {message}");
    message
}

const CARBON: &str = "\
[cache]
LINE_RECEIVER_PORT = 2003

[relay]
RELAY_METHOD = consistent-hashing
REPLICATION_FACTOR = 2
DESTINATIONS = 10.0.0.1:2004:a, 10.0.0.1:2104:b,
    10.0.0.2:2004:a

[relay:b]
DESTINATIONS = 10.0.0.9:2004, [::1]:2004:x
REPLICATION_FACTOR = 1
DIVERSE_REPLICAS = off
ROUTER_HASH_TYPE = fnv1a_ch

[aggregator]
DESTINATIONS = 10.0.0.7:2004
";

#[test]
fn carbon_conf_relay_and_instances() {
    assert_eq!(detect(CARBON).unwrap(), Kind::CarbonConf);
    let relay = parse(CARBON, None).unwrap();
    assert_eq!(relay.cluster, "relay");
    assert_eq!(relay.labels, ["10.0.0.1:2004:a", "10.0.0.1:2104:b", "10.0.0.2:2004:a"]);
    let ring = &relay.ring;
    assert_eq!(
        (ring.hash(), ring.router(), ring.replicas(), ring.diverse()),
        (Hash::CarbonCh, Router::Carbon, 2, true)
    );

    for name in ["b", "relay:b"] {
        let instance = parse(CARBON, Some(name)).unwrap();
        assert_eq!(instance.cluster, "relay:b");
        assert_eq!(instance.labels, ["10.0.0.9:2004", "[::1]:2004:x"]);
        let ring = &instance.ring;
        assert_eq!((ring.hash(), ring.replicas(), ring.diverse()), (Hash::Fnv1aCh, 1, false));
    }
    // The aggregator routes by consistent hashing whatever RELAY_METHOD says.
    let aggregator = parse(CARBON, Some("aggregator")).unwrap();
    assert_eq!(aggregator.labels, ["10.0.0.7:2004"]);
}

#[test]
fn carbon_conf_semantics() {
    // [DEFAULT] is re-applied by the instance's read: its REPLICATION_FACTOR wins over [relay]'s.
    let text = "[DEFAULT]\nREPLICATION_FACTOR = 1\nhost = 10.0.0.5\n[relay]\nRELAY_METHOD = consistent-hashing\n\
                REPLICATION_FACTOR = 2\nDESTINATIONS = %(host)s:2004:a, 10.0.0.6:2004, 10.0.0.6:2004\n[relay:x]\n\
                LOG_DIR = /var/log/100%%\n";
    let relay = parse(text, None).unwrap();
    assert_eq!(relay.ring.replicas(), 2);
    assert_eq!(relay.labels, ["10.0.0.5:2004:a", "10.0.0.6:2004"], "exact duplicates are placed once");
    assert_eq!(relay.notes.len(), 1, "{:?}", relay.notes);
    assert_eq!(parse(text, Some("x")).unwrap().ring.replicas(), 1);
}

#[test]
fn carbon_conf_errors() {
    let relay = |body: &str| format!("[cache]\n[relay]\n{body}\n");
    for (text, cluster, want) in [
        (relay("DESTINATIONS = a:1"), None, "RELAY_METHOD = rules routes by relay-rules.conf"),
        (
            relay("RELAY_METHOD = aggregated-consistent-hashing\nDESTINATIONS = a:1"),
            None,
            "aggregated-consistent-hashing",
        ),
        (relay("RELAY_METHOD = fast-hashing\nDESTINATIONS = a:1"), None, "FastHashRing"),
        (relay("RELAY_METHOD = magic\nDESTINATIONS = a:1"), None, "RELAY_METHOD = magic unknown"),
        (relay("RELAY_METHOD = consistent-hashing"), None, "no DESTINATIONS"),
        (relay("RELAY_METHOD = consistent-hashing\nDESTINATIONS = a:1\nROUTER_HASH_TYPE = mmh3_ch"), None, "mmh3"),
        (relay("RELAY_METHOD = consistent-hashing\nDESTINATIONS = a:1\nROUTER_HASH_TYPE = md5"), None, "unknown hash"),
        (
            relay("RELAY_METHOD = consistent-hashing\nDESTINATIONS = a:1\nDIVERSE_REPLICAS = maybe"),
            None,
            "not a boolean",
        ),
        (relay("RELAY_METHOD = consistent-hashing\nDESTINATIONS = a:1\nDYNAMIC_ROUTER = true"), None, "DYNAMIC_ROUTER"),
        (
            relay("RELAY_METHOD = consistent-hashing\nDESTINATIONS = a:1\nREPLICATION_FACTOR = 2.5"),
            None,
            "whole number",
        ),
        (
            relay("RELAY_METHOD = consistent-hashing\nDESTINATIONS = a:1\nREPLICATION_FACTOR = 2"),
            None,
            "replication factor 2",
        ),
        (relay("RELAY_METHOD = consistent-hashing\nDESTINATIONS = a:1, a:2"), None, "duplicate node"),
        (relay("RELAY_METHOD = consistent-hashing\nDESTINATIONS = a"), None, "need a port"),
        (relay("RELAY_METHOD = consistent-hashing\nDESTINATIONS = %(nope)s:1"), None, "%(nope)s"),
        (relay("RELAY_METHOD = consistent-hashing\nDESTINATIONS = a:1"), Some("x"), "no relay section \"x\""),
        (relay("RELAY_METHOD = consistent-hashing\nDESTINATIONS = a:1"), Some("cache"), "carbon-cache"),
        ("[cache]\nX = 1\n".to_owned(), None, "no relay section \"relay\""),
    ] {
        let message = err(&text, cluster);
        assert!(message.contains(want), "{text:?}: {message}");
    }
    assert!(err(&relay("RELAY_METHOD = consistent-hashing\nDESTINATIONS = a:1"), Some("x")).contains("sections: relay"));
}

const CARBONATE: &str = "\
[main]
DESTINATIONS = 10.0.0.1:2004:a, 10.0.0.1:2104:b, 10.0.0.2:2004:a
REPLICATION_FACTOR = 2
SSH_USER = carbon

[other]
destinations = 10.0.0.3 : 2004 ,10.0.0.4:2004
replication_factor = 1
diverse_replicas = no
hashing_type = fnv1a_ch
";

#[test]
fn carbonate_conf() {
    assert_eq!(detect(CARBONATE).unwrap(), Kind::CarbonateConf);
    let main = parse(CARBONATE, None).unwrap();
    assert_eq!(main.cluster, "main");
    assert!(main.ring.diverse() && main.notes.is_empty());
    let other = parse(CARBONATE, Some("other")).unwrap();
    assert_eq!(other.labels, ["10.0.0.3:2004", "10.0.0.4:2004"], "carbonate removes every space");
    assert_eq!((other.ring.hash(), other.ring.diverse()), (Hash::Fnv1aCh, false));
    assert!(other.notes[0].contains("carbonate 1.1.10 reads any non-empty value as true"), "{:?}", other.notes);
    let empty = CARBONATE.replace("diverse_replicas = no", "diverse_replicas =");
    let other = parse(&empty, Some("other")).unwrap();
    assert!(!other.ring.diverse() && other.notes.is_empty(), "an empty value is carbonate's false");
}

#[test]
fn carbonate_conf_errors() {
    let one = |body: &str| format!("[main]\ndestinations = a:1\n{body}\n");
    for (text, cluster, want) in [
        (one("replication_factor = 1"), Some("x"), "no cluster \"x\" in this carbonate.conf; clusters: main"),
        (one(""), None, "no replication_factor"),
        ("[main]\nreplication_factor = 1\n[x]\ndestinations = a:1\n".to_owned(), None, "no destinations"),
        (one("replication_factor = 1\nrelay_method = aggregated-consistent-hashing"), None, "aggregation-rules"),
        (one("replication_factor = 1\nrelay_method = rules"), None, "refuses rather than guess"),
        (one("replication_factor = 1\ndiverse_replicas = sometimes"), None, "not a boolean"),
        (one("replication_factor = 1\nhashing_type = mmh3_ch"), None, "mmh3"),
        (one("replication_factor = x"), None, "whole number"),
    ] {
        let message = err(&text, cluster);
        assert!(message.contains(want), "{text:?}: {message}");
    }
}

const RELAY: &str = r#"
# carbon-c-relay 3.7
listen type linemode transport plain 2003 proto tcp 2003 proto udp ;
statistics submit every 60 seconds prefix with carbon.relays.\.1 ;
cluster fwd forward 10.9.0.1:2003 ;
cluster "graphite"
    carbon_ch replication 2 dynamic
        10.0.0.1:2003=a proto tcp   # first
        10.0.0.2 = "b c" transport plain ssl
        [2001:db8::1]:2005=007 type linemode
    ;
rewrite ^nomatch\.(.*) into other.\1 ;
aggregate ^sys\.cpu\.[^.]+\.idle every 60 seconds expire after 75 seconds
    compute sum write to sys.cpu.idle ;
match * send to graphite stop ;
"#;

#[test]
fn relay_config() {
    assert_eq!(detect(RELAY).unwrap(), Kind::RelayConf);
    for cluster in [None, Some("graphite")] {
        let config = parse(RELAY, cluster).unwrap();
        assert_eq!(config.cluster, "graphite");
        assert_eq!(config.labels, ["10.0.0.1:2003:a", "10.0.0.2:2003:b c", "[2001:db8::1]:2005:7"]);
        let ring = &config.ring;
        assert_eq!(
            (ring.hash(), ring.router(), ring.replicas(), ring.diverse()),
            (Hash::CarbonCh, Router::Relay, 2, false)
        );
    }
}

#[test]
fn relay_errors() {
    for (text, cluster, want) in [
        (RELAY, Some("nope"), "no cluster \"nope\" in this carbon-c-relay config; clusters: fwd, graphite"),
        (RELAY, Some("fwd"), "cluster fwd: a forward cluster sends to its members without a hash ring"),
        ("cluster a forward h:1 ;\n", None, "no hash cluster"),
        ("cluster a carbon_ch h:1 ;\ncluster b fnv1a_ch h:1=x ;\n", None, "several hash clusters (a, b)"),
        (
            "cluster a carbon_ch h:1 ;\ninclude /etc/more.conf ;\n",
            Some("b"),
            "included files are not read: /etc/more.conf",
        ),
        ("cluster a carbon_ch h:1\n", None, "line 1: statement not terminated"),
        ("cluster a ring h:1 ;\n", None, "unknown cluster type \"ring\""),
        ("cluster a carbon_ch replication x h:1 ;\n", None, "replication \"x\""),
        ("cluster a carbon_ch replication 3 h:1 h:2 ;\n", None, "replication factor 3"),
        ("cluster a carbon_ch ;\n", None, "no members"),
        ("cluster a carbon_ch h:1 = ;\n", None, "without an instance"),
        ("cluster a carbon_ch h:1 ;\ncluster a carbon_ch h:2 ;\n", None, "defined twice"),
        ("cluster a carbon_ch h:1 ;\nfrobnicate ;\n", None, "unknown statement"),
    ] {
        let message = err(text, cluster);
        assert!(message.contains(want), "{text:?}: {message}");
    }
}

#[test]
fn unknown_kinds_say_what_they_found() {
    for (text, want) in [
        ("", "empty"),
        ("# nothing\n", "empty"),
        ("[web]\nport = 80\n", "sections web and no DESTINATIONS"),
        ("{\"json\": true}\n", "it starts with \"{\\\"json\\\": true}\""),
        ("DESTINATIONS = a:1\n", "it starts with"),
    ] {
        match detect(text) {
            Err(e @ Error::UnknownKind { .. }) => assert!(e.to_string().contains(want), "{text:?}: {e}"),
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

/// Hostile input: random texts built from the characters that matter to the three syntaxes never panic,
/// and every refusal is one line.
#[test]
fn random_text_never_panics() {
    use rand::{Rng, SeedableRng};
    const PIECES: &[&str] = &[
        "[",
        "]",
        "relay",
        "main",
        "relay:",
        "cache",
        "=",
        ":",
        ";",
        "#",
        "\"",
        "\\",
        "%",
        "%(",
        ")s",
        "%%",
        "\n",
        "  ",
        " ",
        ",",
        "DESTINATIONS",
        "REPLICATION_FACTOR",
        "2",
        "0",
        "007",
        "consistent-hashing",
        "RELAY_METHOD",
        "cluster",
        "carbon_ch",
        "jump_fnv1a_ch",
        "forward",
        "replication",
        "h:2004",
        "[::1]",
        "é",
        "\r",
        "\t",
        "[DEFAULT]",
        "diverse_replicas",
        "DIVERSE_REPLICAS",
        "include",
        "match",
        "proto",
        "mtls",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for _ in 0..20_000 {
        let text: String = (0..rng.gen_range(0..40)).map(|_| PIECES[rng.gen_range(0..PIECES.len())]).collect();
        for cluster in [None, Some("main"), Some("relay:b"), Some("x")] {
            if let Err(e) = parse(&text, cluster) {
                assert!(!e.to_string().contains('\n'), "{text:?}: {e}");
            }
        }
    }
}
