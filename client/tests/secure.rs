//! End-to-end tests of the client's negotiated features against a real
//! nsqd: TLS (CA file, verification on and off, client certificates),
//! Snappy, DEFLATE, AUTH, sample rate, user agent and message timeout, and
//! manual responses.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nsq::{handler_fn, Config, Consumer, Error, Message, Producer};
use nsq_test_support::consumer::{connect_to, receive, recording_consumer};
use nsq_test_support::{wait_for_value, wait_until, AuthServer, Certs, NsqdProcess};

fn tls_config(certs: &Certs) -> Config {
    Config {
        tls_v1: true,
        tls_root_ca_file: Some(certs.path("ca.pem")),
        ..Config::default()
    }
}

/// Publish `n` bodies with `producer`, consume them with a consumer made
/// from `config`, and return what nsqd says about that consumer.
async fn round_trip(
    nsqd: &NsqdProcess,
    producer: &Producer,
    config: Config,
    topic: &str,
) -> serde_json::Value {
    let bodies: Vec<String> = (0..20)
        .map(|i| format!("{topic}-{i}-{}", "x".repeat(i * 50)))
        .collect();
    producer.multi_publish(topic, bodies.clone()).await.unwrap();
    let config = Config {
        max_in_flight: 5,
        ..config
    };
    let (consumer, mut rx) = recording_consumer(topic, "ch", config);
    connect_to(&consumer, [nsqd]).await;
    assert_eq!(receive(&mut rx, bodies.len()).await, bodies);
    let subscriber = nsqd
        .clients(topic)
        .into_iter()
        .find(|c| c["finish_count"].as_u64().unwrap_or(0) > 0)
        .unwrap_or_else(|| nsqd.fail("no subscriber in /stats"));
    consumer.stop().await;
    subscriber
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_file_snappy_and_deflate() {
    let certs = Certs::new();
    let args = certs.nsqd_args();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let nsqd = NsqdProcess::start(&refs);
    let addr = nsqd.tcp_addr().to_string();

    let producer = Producer::new(addr.clone(), tls_config(&certs));
    producer.publish("tls_plain", "warm up").await.unwrap();
    let pubber = nsqd.clients("tls_plain");
    assert_eq!(pubber[0]["tls"], true, "{pubber:?}");

    // Each compression over TLS: (the consumer's config, its topic, what it turns on, off).
    let cases = [
        (
            Config {
                snappy: true,
                user_agent: "secure-test/1".into(),
                ..tls_config(&certs)
            },
            "tls_snappy",
            "snappy",
            "deflate",
        ),
        (
            Config {
                deflate: true,
                deflate_level: 3,
                ..tls_config(&certs)
            },
            "tls_deflate",
            "deflate",
            "snappy",
        ),
    ];
    for (config, topic, on, off) in cases {
        let user_agent = config.user_agent.clone();
        let sub = round_trip(&nsqd, &producer, config, topic).await;
        assert_eq!(
            (&sub["tls"], &sub[on], &sub[off]),
            (&true.into(), &true.into(), &false.into()),
            "{sub}"
        );
        assert_eq!(sub["user_agent"], user_agent.as_str(), "{sub}");
    }

    // Compression without TLS, with the producer compressing too.
    let plain = Producer::new(
        addr.clone(),
        Config {
            deflate: true,
            deflate_level: 9,
            ..Config::default()
        },
    );
    let deflate = round_trip(
        &nsqd,
        &plain,
        Config {
            snappy: true,
            ..Config::default()
        },
        "plain_snappy",
    )
    .await;
    assert_eq!(
        (&deflate["tls"], &deflate["snappy"]),
        (&false.into(), &true.into()),
        "{deflate}"
    );
}

#[nsq_test_support::test]
async fn tls_verification_on_and_off_and_client_certificates() {
    let certs = Certs::new();
    let mut args = certs.nsqd_args();
    args.push("--tls-client-auth-policy=require-verify".into());
    // TLS on TCP only, so the harness can still ping plain HTTP.
    args.push("--tls-required=tcp-https".into());
    args.push(format!(
        "--tls-root-ca-file={}",
        certs.path("ca.pem").display()
    ));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let nsqd = NsqdProcess::start(&refs);
    let addr = nsqd.tcp_addr().to_string();

    // The system's roots do not know the test CA: the handshake fails.
    let unknown = Producer::new(
        addr.clone(),
        Config {
            tls_v1: true,
            ..Config::default()
        },
    );
    let err = unknown.publish("t", "x").await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");

    // Verification off gets past the server certificate, but this nsqd
    // wants a client certificate signed by its CA.
    let no_cert = Producer::new(
        addr.clone(),
        Config {
            tls_v1: true,
            tls_insecure_skip_verify: true,
            ..Config::default()
        },
    );
    assert!(no_cert.publish("t", "x").await.is_err());

    let with_cert = Config {
        tls_cert: Some(certs.path("cert.pem")),
        tls_key: Some(certs.path("key.pem")),
        ..tls_config(&certs)
    };
    Producer::new(addr.clone(), with_cert.clone())
        .publish("t", "x")
        .await
        .unwrap();
    let skip = Config {
        tls_insecure_skip_verify: true,
        tls_root_ca_file: None,
        ..with_cert.clone()
    };
    Producer::new(addr.clone(), skip)
        .publish("t", "y")
        .await
        .unwrap();

    // A missing file is reported as such, before any connection.
    let missing = Config {
        tls_root_ca_file: Some("/nonexistent/ca.pem".into()),
        ..with_cert
    };
    assert!(matches!(
        Producer::new(addr.clone(), missing).publish("t", "z").await,
        Err(Error::TlsFile { .. })
    ));

    // Asking a plain nsqd for TLS is refused rather than sent in clear.
    let plain = NsqdProcess::start(&[]);
    let refused = Producer::new(plain.tcp_addr().to_string(), tls_config(&certs));
    assert!(matches!(
        refused.publish("t", "x").await,
        Err(Error::TlsRefused(_))
    ));
}

#[nsq_test_support::test]
async fn auth_secret_is_sent_and_required() {
    let auth = AuthServer::start(&[
        r#"{"ttl":3600,"identity":"rs","authorizations":[{"topic":"^ok_","channels":[".*"],"permissions":["subscribe","publish"]}]}"#,
    ]);
    let nsqd = NsqdProcess::start(&[&auth.nsqd_arg()]);
    let addr = nsqd.tcp_addr().to_string();

    let anonymous = Producer::new(addr.clone(), Config::default());
    assert!(matches!(
        anonymous.publish("ok_t", "x").await,
        Err(Error::AuthRequired)
    ));

    let config = Config {
        auth_secret: Some("s3cret".into()),
        ..Config::default()
    };
    let producer = Producer::new(addr.clone(), config.clone());
    producer.publish("ok_t", "x").await.unwrap();
    match producer.publish("other", "x").await {
        Err(Error::Server { text, .. }) => assert!(text.starts_with("E_UNAUTHORIZED"), "{text}"),
        other => panic!("expected E_UNAUTHORIZED, got {other:?}"),
    }
    assert!(
        auth.requests().iter().any(|r| r.contains("secret=s3cret")),
        "{:?}",
        auth.requests()
    );
    let subscriber = round_trip(
        &nsqd,
        &Producer::new(addr, config.clone()),
        config,
        "ok_sub",
    )
    .await;
    assert_eq!(subscriber["authed"], true, "{subscriber}");
}

#[nsq_test_support::test]
async fn sample_rate_is_negotiated() {
    let nsqd = NsqdProcess::start(&[]);
    let addr = nsqd.tcp_addr().to_string();
    let config = Config {
        sample_rate: 30,
        ..Config::default()
    };
    let consumer = Consumer::new("sampled", "ch", config).unwrap();
    consumer.add_handler(handler_fn(|_| async { Ok(()) }));
    consumer.connect_to_nsqd(&addr).await.unwrap();
    let c = &nsqd.clients("sampled")[0];
    assert_eq!(c["sample_rate"], 30, "{c}");
    consumer.stop().await;
}

/// A consumer whose handler answers nothing and keeps every message.
fn holding_consumer(topic: &str, config: Config) -> (Consumer, Arc<Mutex<Vec<Message>>>) {
    let held: Arc<Mutex<Vec<Message>>> = Arc::default();
    let h = held.clone();
    let consumer = Consumer::new(topic, "ch", config).unwrap();
    consumer.add_handler(handler_fn(move |msg: Message| {
        msg.disable_auto_response();
        h.lock().unwrap().push(msg);
        async { Ok(()) }
    }));
    (consumer, held)
}

#[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_responses_and_the_message_timeout() {
    let nsqd = NsqdProcess::start(&[]);
    let addr = nsqd.tcp_addr().to_string();
    let producer = Producer::new(addr.clone(), Config::default());
    producer
        .multi_publish("manual", ["a", "b", "c"])
        .await
        .unwrap();

    // The handler's Ok answers nothing, so with a 1 s message timeout
    // nsqd takes the message back and delivers it again.
    let (timing_out, held) = holding_consumer(
        "manual",
        Config {
            msg_timeout: Some(Duration::from_secs(1)),
            stop_timeout: Duration::from_millis(100),
            ..Config::default()
        },
    );
    timing_out.connect_to_nsqd(&addr).await.unwrap();
    wait_until(
        Duration::from_secs(10),
        "a redelivery after the timeout",
        || {
            let held = held.lock().unwrap();
            held.iter()
                .find(|m| m.attempts == 2)
                .map(|_| ())
                .ok_or(held.len())
        },
    )
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));
    assert_eq!(timing_out.stats().finished, 0);
    // Its stop gives up waiting for the unanswered message; nsqd
    // requeues it when the connection closes.
    timing_out.stop().await;
    held.lock().unwrap().clear();

    // Now answer by hand, later: FIN two, REQ one; answering twice is
    // refused.
    let (answering, held) = holding_consumer(
        "manual",
        Config {
            max_in_flight: 3,
            ..Config::default()
        },
    );
    answering.connect_to_nsqd(&addr).await.unwrap();
    wait_for_value(Duration::from_secs(10), "three messages held", 3, || {
        held.lock().unwrap().len()
    })
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));
    let pick = |body: &[u8]| {
        held.lock()
            .unwrap()
            .iter()
            .find(|m| &m.body[..] == body)
            .cloned()
            .unwrap()
    };
    let (a, b, c) = (pick(b"a"), pick(b"b"), pick(b"c"));
    assert!(a.is_auto_response_disabled() && !b.has_responded());
    assert!(a.finish());
    assert!(b.finish());
    assert!(!b.finish());
    assert!(c.requeue_without_backoff(Some(Duration::ZERO)));
    assert!(!c.finish());
    // "c" comes back; finish it too.
    let again = wait_until(Duration::from_secs(10), "c redelivered", || {
        let held = held.lock().unwrap();
        held.iter()
            .skip(3)
            .find(|m| &m.body[..] == b"c")
            .cloned()
            .ok_or(held.len())
    })
    .await
    .unwrap_or_else(|e| nsqd.fail(&e));
    assert!(again.finish());
    let stats = answering.stats();
    assert_eq!((stats.finished, stats.requeued), (3, 1), "{stats:?}");
    answering.stop().await;
    let ch = &nsqd.http_get("/stats?format=json&topic=manual").json()["topics"][0]["channels"][0];
    assert_eq!(
        (&ch["depth"], &ch["in_flight_count"]),
        (&0.into(), &0.into()),
        "{ch}"
    );
}
