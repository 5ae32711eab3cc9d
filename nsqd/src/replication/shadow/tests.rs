//! Tests of `shadow.rs`.

use bytes::Bytes;

use crate::replication::wire::WireMessage;

use super::*;

fn m(id: u64) -> WireMessage {
    WireMessage {
        id,
        timestamp: 1,
        attempts: 0,
        body: Bytes::from_static(b"x"),
    }
}

fn t() -> TopicName {
    "t".parse().unwrap()
}

fn c(s: &str) -> ChannelName {
    s.parse().unwrap()
}

#[test]
fn fan_out_and_finish_per_channel() {
    let mut s = Shadow::default();
    s.meta(MetaOp::ChannelCreate, &t(), Some(&c("a")));
    s.meta(MetaOp::ChannelCreate, &t(), Some(&c("b")));
    s.append(&t(), None, 0, &Batch::from(&[m(1), m(2)][..]), u64::MAX)
        .unwrap();
    assert_eq!(s.depth(), 4);
    s.finish(&t(), &c("a"), &[1, 2]);
    s.finish(&t(), &c("b"), &[1]);
    assert_eq!(s.depth(), 1);
    assert!(s.topics[&t()].channels[&c("b")].msgs.contains_key(&2));
}

#[test]
fn held_until_first_channel_then_released() {
    let mut s = Shadow::default();
    s.append(&t(), None, 0, &Batch::from(&[m(1)][..]), u64::MAX)
        .unwrap();
    assert_eq!(s.topics[&t()].held.len(), 1);
    s.meta(MetaOp::ChannelCreate, &t(), Some(&c("a")));
    assert!(s.topics[&t()].held.is_empty());
    assert_eq!(s.topics[&t()].channels[&c("a")].msgs.len(), 1);
    assert_eq!(s.depth(), 1);
}

#[test]
fn a_finish_before_its_append_leaves_nothing_behind() {
    let mut s = Shadow::default();
    s.meta(MetaOp::ChannelCreate, &t(), Some(&c("a")));
    s.finish(&t(), &c("a"), &[7]);
    s.append(&t(), None, 0, &Batch::from(&[m(7)][..]), u64::MAX)
        .unwrap();
    assert_eq!(s.depth(), 0);
}

#[test]
fn ephemeral_is_not_shadowed_and_delete_and_empty_drop() {
    let mut s = Shadow::default();
    let e: TopicName = "x#ephemeral".parse().unwrap();
    s.append(&e, None, 0, &Batch::from(&[m(1)][..]), u64::MAX)
        .unwrap();
    assert_eq!(s.depth(), 0);
    s.meta(MetaOp::ChannelCreate, &t(), Some(&c("a")));
    s.append(&t(), None, 0, &Batch::from(&[m(1), m(2)][..]), u64::MAX)
        .unwrap();
    s.meta(MetaOp::ChannelEmpty, &t(), Some(&c("a")));
    assert_eq!(s.depth(), 0);
    s.append(&t(), None, 0, &Batch::from(&[m(3)][..]), u64::MAX)
        .unwrap();
    s.meta(MetaOp::TopicDelete, &t(), None);
    assert_eq!((s.depth(), s.bytes()), (0, 0));
}

#[test]
fn full_shadow_refuses() {
    let mut s = Shadow::default();
    s.append(&t(), None, 0, &Batch::from(&[m(1), m(2)][..]), 1)
        .unwrap();
    assert_eq!(
        s.append(&t(), None, 0, &Batch::from(&[m(3)][..]), 1),
        Err(ShadowError::Full(2))
    );
}
