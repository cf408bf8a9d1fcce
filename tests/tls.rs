//! `amqps://` against a real RabbitMQ node with a TLS listener, started for this test beside the
//! default node (scripts/rabbitmq-node.sh), with a CA, server and client certificates made here by
//! the openssl CLI. The node demands a client certificate.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use docpipe::amqp::short;
use docpipe::amqp::{connect, TransportError};
use docpipe::config::{Config, EMBEDDED};
use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A CA, and a certificate it signs for `cn` with the given extensions (PKCS#8 key).
fn ca(dir: &Path, name: &str) {
    openssl(dir, &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &format!("/CN={name}"), "-keyout", &format!("{name}.key"), "-out", &format!("{name}.pem")]);
}

fn issue(dir: &Path, ca: &str, name: &str, cn: &str, extensions: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
    openssl(dir, &["req", "-newkey", "rsa:2048", "-nodes", "-subj", &format!("/CN={cn}"), "-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr")]);
    openssl(
        dir,
        &["x509", "-req", "-in", &format!("{name}.csr"), "-CA", &format!("{ca}.pem"), "-CAkey", &format!("{ca}.key"), "-CAcreateserial", "-days", "2", "-extfile", &format!("{name}.ext"), "-out", &format!("{name}.pem")],
    );
}

/// A port free now, whose +20000 (the node's distribution port) is free too.
fn free_port() -> u16 {
    for _ in 0..200 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if (20000..45000).contains(&port) && TcpListener::bind(("127.0.0.1", port + 20000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair");
}

/// The extra node; stopped when dropped, whatever the test did.
struct Node {
    name: String,
    dir: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new(script()).args(["stop", &self.name]).arg(&self.dir).status();
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/rabbitmq-node.sh")
}

fn config(url: &str, ca: &Path, client: Option<(&Path, &Path)>) -> Config {
    let mut config = Config::from_toml("test", EMBEDDED, std::iter::empty()).unwrap();
    config.broker.url = url.to_owned();
    config.broker.tls_ca_file = Some(ca.to_owned());
    config.broker.tls_cert_file = client.map(|c| c.0.to_owned());
    config.broker.tls_key_file = client.map(|c| c.1.to_owned());
    config
}

#[test]
fn amqps_verifies_the_broker_presents_a_client_certificate_and_refuses_a_wrong_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path();
    ca(certs, "ca");
    ca(certs, "other-ca");
    issue(certs, "ca", "server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n");
    issue(certs, "ca", "client", "docpipe-worker", "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n");

    let (amqp_port, tls_port) = (free_port(), free_port());
    let conf = certs.join("tls.conf");
    std::fs::write(
        &conf,
        format!(
            "listeners.ssl.default = 127.0.0.1:{tls_port}\nssl_options.cacertfile = {0}/ca.pem\nssl_options.certfile = {0}/server.pem\nssl_options.keyfile = {0}/server.key\nssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n",
            certs.display()
        ),
    )
    .unwrap();
    let node = Node { name: format!("docpipe-tls-{}", std::process::id()), dir: certs.join("node") };
    let started = Command::new(script()).args(["start", &node.name, &amqp_port.to_string()]).arg(&node.dir).arg(&conf).output().unwrap();
    assert!(started.status.success(), "{}{}", String::from_utf8_lossy(&started.stdout), String::from_utf8_lossy(&started.stderr));

    let url = format!("amqps://guest@localhost:{tls_port}/%2f");
    let client = (certs.join("client.pem"), certs.join("client.key"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // The right CA and a client certificate: a real round trip over TLS.
        let connection = connect(&config(&url, &certs.join("ca.pem"), Some((&client.0, &client.1)))).await.expect("TLS connection");
        let channel = connection.create_channel().await.unwrap();
        let queue = channel.queue_declare(short(""), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default()).await.unwrap();
        channel.basic_publish(short(""), short(queue.name().as_str()), BasicPublishOptions::default(), b"over tls", BasicProperties::default()).await.unwrap().await.unwrap();
        let mut got = None;
        for _ in 0..50 {
            got = channel.basic_get(short(queue.name().as_str()), BasicGetOptions { no_ack: true }).await.unwrap();
            if got.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(got.expect("message back").delivery.data, b"over tls");
        connection.close(200, short("")).await.ok();

        // A CA that did not sign the broker's certificate: refused, and said so.
        let err = connect(&config(&url, &certs.join("other-ca.pem"), Some((&client.0, &client.1)))).await.expect_err("wrong CA refused");
        assert!(matches!(err, TransportError::Tls(_)), "{err}");
        let message = err.to_string();
        assert!(message.contains("certificate") && message.contains("tls_ca_file"), "{message}");

        // No client certificate: this broker demands one.
        assert!(connect(&config(&url, &certs.join("ca.pem"), None)).await.is_err());

        // A key that is not PKCS#8 is refused with advice, and the key is not quoted.
        let rsa = certs.join("client-rsa.key");
        openssl(certs, &["pkey", "-in", "client.key", "-traditional", "-out", "client-rsa.key"]);
        let err = connect(&config(&url, &certs.join("ca.pem"), Some((&client.0, &rsa)))).await.expect_err("traditional key refused");
        let message = err.to_string();
        assert!(message.contains("PKCS#8"), "{message}");
        let key_text = std::fs::read_to_string(&rsa).unwrap();
        let key_line = key_text.lines().nth(1).unwrap();
        assert!(!message.contains(key_line), "{message}");
    });
    drop(node);
}
