use super::*;

fn join_of(member: &str, protocols: &[(&str, &[u8])]) -> ClassicJoin {
    ClassicJoin {
        member_id: member.to_owned(),
        fresh: true,
        instance_id: None,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|(name, metadata)| ClassicProtocol { name: (*name).to_owned(), metadata: metadata.to_vec() })
            .collect(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 20_000,
        client_id: "test".into(),
        client_host: "/127.0.0.1".into(),
    }
}

fn joined(answer: &ClassicAnswer) -> (i32, String, String, usize) {
    match answer {
        ClassicAnswer::Joined { generation, protocol, leader, members, .. } => {
            (*generation, protocol.clone(), leader.clone(), members.len())
        }
        other => panic!("not joined: {other:?}"),
    }
}

fn sync(g: &mut ClassicGroup, member: &str, generation: i32, assignments: &[(&str, &[u8])]) -> ClassicAnswer {
    g.sync(&ClassicSync {
        member_id: member.into(),
        instance_id: None,
        generation,
        assignments: assignments.iter().map(|(m, a)| ((*m).to_owned(), a.to_vec())).collect(),
    })
}

#[test]
fn the_leader_gets_every_members_metadata_and_its_assignment_is_relayed() {
    let mut g = ClassicGroup::default();
    let a = join_of("a", &[("range", b"ma"), ("sticky", b"sa")]);
    let b = join_of("b", &[("sticky", b"sb"), ("range", b"mb")]);
    // the first round waits the initial delay for more members
    assert_eq!(g.join(&a, 0), ClassicAnswer::Pending);
    assert_eq!(g.join(&b, 100), ClassicAnswer::Pending);
    assert_eq!(g.join_step(&a), Step::Answer(ClassicAnswer::Pending));
    g.expire(&[], INITIAL_REBALANCE_DELAY_MS as i64);
    let Step::Answer(for_a) = g.join_step(&a) else { panic!("a is answered from the state") };
    let Step::Answer(for_b) = g.join_step(&b) else { panic!("b is answered from the state") };
    // a tie between range and sticky goes to the first member's order
    assert_eq!(joined(&for_a), (1, "range".into(), "a".into(), 2));
    assert_eq!(joined(&for_b), (1, "range".into(), "a".into(), 0), "only the leader gets the members");
    if let ClassicAnswer::Joined { members, .. } = &for_a {
        assert_eq!(members[1].metadata, b"mb", "metadata of the chosen protocol");
    }
    // b waits for the leader's assignment; the leader's sync is what the log takes
    let b_sync = ClassicSync { member_id: "b".into(), instance_id: None, generation: 1, assignments: vec![] };
    assert_eq!(g.sync_step(&b_sync), Step::Answer(ClassicAnswer::Pending));
    let leader = sync(&mut g, "a", 1, &[("a", b"to-a"), ("b", b"to-b")]);
    assert!(matches!(leader, ClassicAnswer::Synced { ref assignment, .. } if assignment == b"to-a"));
    let Step::Answer(ClassicAnswer::Synced { assignment, .. }) = g.sync_step(&b_sync) else {
        panic!("b is answered")
    };
    assert_eq!(assignment, b"to-b", "the bytes are relayed unchanged");
    assert_eq!(g.heartbeat("b", None, 1), ClassicAnswer::Done);
    assert_eq!(g.heartbeat("b", None, 0), ClassicAnswer::Refused(ClassicError::IllegalGeneration));
    assert_eq!(g.heartbeat("x", None, 1), ClassicAnswer::Refused(ClassicError::UnknownMemberId));
}

#[test]
fn a_new_member_makes_everyone_join_again_and_stragglers_are_dropped() {
    let mut g = ClassicGroup::default();
    g.join(&join_of("a", &[("range", b"")]), 0);
    g.expire(&[], 5_000);
    sync(&mut g, "a", 1, &[("a", b"1")]);
    assert_eq!(g.info().state, "Stable");
    // c arrives: a is told to rejoin by its heartbeat
    assert_eq!(g.join(&join_of("c", &[("range", b"")]), 6_000), ClassicAnswer::Pending);
    assert_eq!(g.heartbeat("a", None, 1), ClassicAnswer::Refused(ClassicError::RebalanceInProgress));
    assert_eq!(g.check_commit("a", 1), Ok(()), "commits of the current generation go on during the round");
    let mut again = join_of("a", &[("range", b"")]);
    again.fresh = false;
    assert_eq!(g.join_step(&again), Step::Write);
    assert_eq!(joined(&g.join(&again, 6_100)), (2, "range".into(), "a".into(), 2));
    assert_eq!(g.check_commit("a", 2), Err(ClassicError::RebalanceInProgress), "awaiting the assignment");
    sync(&mut g, "a", 2, &[]);
    // c leaves; a must join again, and if it does not within the rebalance
    // timeout the round ends without it and the group is empty
    g.leave(&[("c".into(), None)], 7_000);
    assert_eq!(g.info().state, "PreparingRebalance");
    g.expire(&[], 7_000 + 20_000);
    assert_eq!((g.info().state.as_str(), g.members.len(), g.generation), ("Empty", 0, 3));
}

#[test]
fn protocols_must_be_shared_and_types_equal() {
    let mut g = ClassicGroup::default();
    g.join(&join_of("a", &[("range", b"")]), 0);
    let other = join_of("b", &[("roundrobin", b"")]);
    assert_eq!(g.join(&other, 1), ClassicAnswer::Refused(ClassicError::InconsistentGroupProtocol));
    let mut connect = join_of("b", &[("range", b"")]);
    connect.protocol_type = "connect".into();
    assert_eq!(g.join(&connect, 1), ClassicAnswer::Refused(ClassicError::InconsistentGroupProtocol));
    // refusals are answered from the state, costing no log entry
    assert_eq!(
        g.join_step(&other),
        Step::Answer(ClassicAnswer::Refused(ClassicError::InconsistentGroupProtocol))
    );
    // an id handed out with MEMBER_ID_REQUIRED joins as a new member
    let mut pending = join_of("z", &[("range", b"")]);
    pending.fresh = false;
    assert_eq!(g.join(&pending, 1), ClassicAnswer::Pending);
    assert!(g.members.contains_key("z"));
}

#[test]
fn a_static_member_returns_without_a_rebalance_and_fences_its_old_id() {
    let mut g = ClassicGroup::default();
    let mut a = join_of("a1", &[("range", b"")]);
    a.instance_id = Some("host-a".into());
    let mut b = join_of("b", &[("range", b"")]);
    b.instance_id = Some("host-b".into());
    g.join(&b, 0);
    g.join(&a, 0);
    g.expire(&[], 3_000);
    let leader = g.leader.clone().expect("a leader");
    assert_eq!(leader, "a1");
    sync(&mut g, "a1", 1, &[("a1", b"A"), ("b", b"B")]);
    // b restarts under a new member id with the same instance id
    let mut back = b.clone();
    back.member_id = "b2".into();
    assert_eq!(joined(&g.join(&back, 4_000)), (1, "range".into(), "a1".into(), 0));
    assert_eq!(g.info().state, "Stable", "no rebalance");
    let Step::Answer(ClassicAnswer::Synced { assignment, .. }) = g.sync_step(&ClassicSync {
        member_id: "b2".into(),
        instance_id: Some("host-b".into()),
        generation: 1,
        assignments: vec![],
    }) else {
        panic!("b2 is answered")
    };
    assert_eq!(assignment, b"B", "the old id's assignment");
    assert_eq!(g.heartbeat("b", Some("host-b"), 1), ClassicAnswer::Refused(ClassicError::FencedInstanceId));
}

#[test]
fn a_leader_that_never_syncs_starts_a_new_round() {
    let mut g = ClassicGroup::default();
    g.join(&join_of("a", &[("range", b"")]), 0);
    g.join(&join_of("b", &[("range", b"")]), 0);
    g.expire(&[], 3_000);
    assert_eq!(g.info().state, "CompletingRebalance");
    g.expire(&[], 3_000 + 20_000);
    assert_eq!(g.info().state, "PreparingRebalance");
    // a session that ended drops its member
    g.expire(&["a".into()], 23_001);
    assert!(!g.members.contains_key("a"));
}
