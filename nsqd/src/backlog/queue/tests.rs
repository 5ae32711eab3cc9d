use std::collections::VecDeque;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::message::IdGenerator;

const NOW: i64 = 1_795_000_000_000_000_000;

fn bodies(tag: u8, n: usize) -> Vec<Bytes> {
    (0..n).map(|i| Bytes::from(vec![tag; i % 7 + 1])).collect()
}

/// What publishing `bodies` one by one would have made.
fn singles(ids: &mut IdGenerator, bodies: &[Bytes]) -> Vec<Message> {
    let t = NOW;
    bodies
        .iter()
        .map(|b| Message::new(ids.next_at(t), t, b.clone()))
        .collect()
}

#[test]
fn a_packed_batch_gives_the_messages_single_publishes_would() {
    let b = bodies(1, 300);
    let (mut one, mut many) = (IdGenerator::new(3), IdGenerator::new(3));
    // Start near the end of a tick's sequence, so the IDs cross into the next.
    for _ in 0..3990 {
        one.next_at(NOW);
        many.next_at(NOW);
    }
    let expected = singles(&mut one, &b);
    let packed = Packed::pack(&b, many.reserve(NOW, b.len()), NOW);
    assert_eq!(packed.messages().collect::<Vec<_>>(), expected);
    let mut q = Queue::default();
    q.push_packed(packed);
    assert_eq!(q.len(), 300);
    assert_eq!(q.drain().collect::<Vec<_>>(), expected);
    assert!(q.is_empty());
    let ids: std::collections::HashSet<_> = expected.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), 300, "IDs are unique");
}

#[test]
fn partial_takes_split_and_remove_keep_order() {
    let b = bodies(2, 10);
    let mut ids = IdGenerator::new(1);
    let all = singles(&mut ids.clone(), &b);
    let mut p = Packed::pack(&b, ids.reserve(NOW, 10), NOW);
    let front = p.split_front(4);
    assert_eq!((front.len(), p.len()), (4, 6));
    assert_eq!(front.messages().collect::<Vec<_>>(), all[..4]);
    assert_eq!(p.messages().collect::<Vec<_>>(), all[4..]);
    assert_eq!(p.peek().as_ref(), Some(&all[4]));

    let mut q = Queue::default();
    q.push_packed(Packed::pack(&b, all[0].id, NOW));
    assert_eq!(q.pop_front().as_ref(), Some(&all[0]));
    assert_eq!(q.remove(3).as_ref(), Some(&all[4]), "the middle of a batch");
    assert_eq!(q.remove(0).as_ref(), Some(&all[1]));
    assert_eq!(q.remove(99), None);
    let rest: Vec<_> = q.iter().collect();
    assert_eq!(rest, [&all[2..4], &all[5..]].concat());
    assert_eq!(q.len(), 7);
}

#[test]
fn requeued_messages_interleave_with_batches_and_empty_clears_all() {
    let mut ids = IdGenerator::new(1);
    let a = bodies(3, 3);
    let first = Packed::pack(&a, ids.reserve(NOW, 3), NOW);
    let msgs: Vec<_> = first.messages().collect();
    let mut q = Queue::default();
    q.push_packed(first);
    let taken = q.pop_front().unwrap();
    q.push_back(taken.clone());
    let single = Message::new(ids.next_at(NOW), NOW, Bytes::from_static(b"x"));
    q.push_front(single.clone());
    q.push_packed(Packed::pack(&[], 0, NOW));
    assert_eq!(q.len(), 4, "an empty batch adds nothing");
    let order: Vec<_> = q.iter().collect();
    assert_eq!(order, vec![single, msgs[1].clone(), msgs[2].clone(), taken]);
    q.clear();
    assert!(q.is_empty());
    assert_eq!(q.pop_front(), None);
}

#[derive(Debug, Clone)]
enum Op {
    /// Publish this many messages as one batch (1: a single message).
    Put(usize),
    Take(usize),
    /// Give the oldest taken message back, at the front or the back.
    Requeue(bool),
    Remove(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1usize..40).prop_map(Op::Put),
        (0usize..50).prop_map(Op::Take),
        any::<bool>().prop_map(Op::Requeue),
        (0usize..60).prop_map(Op::Remove),
    ]
}

proptest! {
    #[test]
    fn matches_a_plain_deque_of_messages(ops in proptest::collection::vec(op(), 1..60)) {
        let mut ids = IdGenerator::new(9);
        let mut q = Queue::default();
        let mut model: VecDeque<Message> = VecDeque::new();
        let mut taken: VecDeque<Message> = VecDeque::new();
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Put(k) => {
                    let b = bodies(n as u8, k);
                    let p = Packed::pack(&b, ids.reserve(NOW + n as i64, k), NOW + n as i64);
                    model.extend(p.messages());
                    if k == 1 {
                        q.push_back(p.peek().unwrap());
                    } else {
                        q.push_packed(p);
                    }
                }
                Op::Take(k) => {
                    for _ in 0..k {
                        let got = q.pop_front();
                        prop_assert_eq!(&got, &model.pop_front());
                        taken.extend(got);
                    }
                }
                Op::Requeue(front) => {
                    if let Some(m) = taken.pop_front() {
                        if front {
                            q.push_front(m.clone());
                            model.push_front(m);
                        } else {
                            q.push_back(m.clone());
                            model.push_back(m);
                        }
                    }
                }
                Op::Remove(i) => prop_assert_eq!(q.remove(i), model.remove(i)),
            }
            prop_assert_eq!(q.len(), model.len());
        }
        prop_assert!(q.iter().eq(model.iter().cloned()));
        let ids: std::collections::HashSet<_> = taken.iter().chain(&model).map(|m| m.id).collect();
        prop_assert_eq!(ids.len(), taken.len() + model.len());
    }
}
