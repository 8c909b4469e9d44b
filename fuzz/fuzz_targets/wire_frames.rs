//! The three frame decoders of `zmanager::wire` on frames split from the
//! input: the first byte is the number of frames (mod 16), then each frame
//! but the last is a length-prefixed chunk (`Input::chunk`) and the last
//! is the rest of the input.
//!
//! Invariant: what decodes, encoded again with the matching `wire`
//! function, decodes to the same thing.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use zeromq::ZmqMessage;
use zmanager::wire::{self, FromWorker, Message, ToWorker};
use zmanager_fuzz::Input;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let count = usize::from(input.byte() % 16);
    let mut frames: Vec<Bytes> = Vec::with_capacity(count);
    for i in 0..count {
        if i + 1 == count {
            frames.push(Bytes::copy_from_slice(input.rest()));
            break;
        }
        frames.push(Bytes::copy_from_slice(input.chunk()));
    }

    // Without the ROUTER's identity frame, as the Subject passes it.
    if let Ok((from, bad)) = wire::decode_from_worker(&frames) {
        let _ = bad.iter().map(ToString::to_string).count();
        match from {
            FromWorker::Ready(ready) => {
                let frames: Vec<Bytes> = wire::ready(ready).iter().cloned().collect();
                let Ok((FromWorker::Ready(again), _)) = wire::decode_from_worker(&frames) else {
                    panic!("READY does not round-trip");
                };
                assert_eq!(again, ready);
            }
            FromWorker::Results(good) if !good.is_empty() => {
                let frames: Vec<Bytes> = wire::results(&good).iter().cloned().collect();
                let Ok((FromWorker::Results(again), bad)) = wire::decode_from_worker(&frames)
                else {
                    panic!("RESULT does not round-trip");
                };
                assert!(bad.is_empty(), "re-encoded results do not decode: {bad:?}");
                assert_eq!(again, good);
            }
            FromWorker::Results(_) | FromWorker::Heartbeat => {}
        }
    }

    // A ZmqMessage has at least one frame.
    let Ok(message) = ZmqMessage::try_from(frames) else {
        return;
    };
    if let Ok((topic, m)) = wire::decode_topic_message(&message) {
        let again = wire::decode_topic_message(&wire::publication(topic.clone(), &m))
            .expect("a re-encoded topic message decodes");
        assert_eq!(again, (topic, m));
    }
    match wire::decode_to_worker(&message) {
        Ok(ToWorker::Work(items)) => {
            let good: Vec<Message> = items.into_iter().filter_map(Result::ok).collect();
            if !good.is_empty() {
                let Ok(ToWorker::Work(again)) = wire::decode_to_worker(&wire::work(&good)) else {
                    panic!("WORK does not round-trip");
                };
                let again: Vec<Message> = again
                    .into_iter()
                    .map(|r| r.expect("a re-encoded work item decodes"))
                    .collect();
                assert_eq!(again, good);
            }
        }
        Ok(ToWorker::Heartbeat) => {}
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
