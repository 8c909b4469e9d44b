//! `@PUBLISH` and `@ASYNC` steps and service management, end to end on real
//! processes (`docs/decorators.md` explains both decorators).

use std::time::Duration;

use zmanager::envelope::{Kind, Status};
use zmanager_tests::client::{RawClient, json};
use zmanager_tests::node::TestNode;

const LIMIT: Duration = Duration::from_secs(20);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_publish_step_reaches_two_subscribers_and_the_flow_goes_on() {
    let node = TestNode::start(1);
    runtime().block_on(async {
        let prefix = "Announce~PUBLISH~";
        let mut first =
            RawClient::connect_with_prefix(&node.endpoints, "sub-1", Some(prefix)).await;
        let mut second =
            RawClient::connect_with_prefix(&node.endpoints, "sub-2", Some(prefix)).await;
        let mut requester = RawClient::connect(&node.endpoints, "req").await;
        requester.request("Announce", "a-1", &"news").await;

        for subscriber in [&mut first, &mut second] {
            let got = subscriber.recv(LIMIT).await.expect("the published step");
            assert_eq!(got.topic, "Announce~PUBLISH~Subject~Announce~announced");
            assert_eq!(got.envelope.kind, Kind::Request);
            assert_eq!(got.envelope.id, "a-1");
            assert_eq!(got.envelope.service, "req");
            assert_eq!(got.envelope.key, "Subject?Announce@PUBLISH?announced");
            assert_eq!(json(&got.payload), serde_json::json!("news"));
        }
        let result = requester.recv(LIMIT).await.expect("the flow's result");
        assert_eq!(
            result.envelope.status,
            Status::Ok,
            "{:?}",
            result.envelope.error
        );
        assert_eq!(result.envelope.key, "??done");
        assert_eq!(json(&result.payload), serde_json::json!("news"));
        // Published once per request, not once per subscriber.
        assert!(first.recv(Duration::from_millis(300)).await.is_none());
    });
}
