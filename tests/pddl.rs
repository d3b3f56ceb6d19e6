//! Reading PDDL: every shared domain and problem parses; malformed input
//! gets a precise error (file, line, column, value), never a panic.

use iterdeploy::pddl::{PddlErrorKind, parse_domain, parse_problem};
use proptest::prelude::*;

const BW: &str = iterdeploy::cli::bundled::BLOCKSWORLD_DOMAIN;

fn domain_error(src: &str) -> String {
    parse_domain(src.as_bytes(), "d.pddl")
        .unwrap_err()
        .to_string()
}

fn problem_error(src: &str) -> String {
    let d = parse_domain(BW.as_bytes(), "bw.pddl").unwrap();
    parse_problem(src.as_bytes(), "p.pddl", &d)
        .unwrap_err()
        .to_string()
}

#[test]
fn layout_quirks_of_real_files_are_accepted() {
    // `)(` without space, upper-case keywords and names, comments anywhere.
    let d = parse_domain(
        b"(DEFINE(DOMAIN Q);c\n(:REQUIREMENTS :STRIPS)(:predicates(P ?x)(Q));c\n(:action A :parameters(?x):precondition(P ?x):effect(and(Q)(not(P ?x)))))",
        "q",
    )
    .unwrap();
    assert_eq!(d.name, "q");
    assert_eq!(d.actions[0].name, "a");
    assert_eq!(d.actions[0].del.len(), 1);
}

#[test]
fn unbalanced_parentheses_point_at_the_open_list() {
    let e = domain_error("(define (domain x)\n  (:predicates (p ?x)\n");
    assert_eq!(
        e,
        "d.pddl:3:1: unbalanced '(': the list opened at 2:3 is never closed"
    );
    let e = domain_error("(define (domain x)))");
    assert_eq!(e, "d.pddl:1:20: unbalanced ')': no '(' is open here");
}

#[test]
fn unsupported_requirements_and_constructs_are_named_with_their_line() {
    let e = domain_error("(define (domain x)\n (:requirements :strips :conditional-effects))");
    assert!(
        e.starts_with("d.pddl:2:25: unsupported requirement `:conditional-effects`"),
        "{e}"
    );
    let e = domain_error(
        "(define (domain x) (:predicates (p ?x))\n (:action a :parameters (?x)\n  :precondition (or (p ?x) (p ?x)) :effect (p ?x)))",
    );
    assert!(
        e.starts_with("d.pddl:3:17: unsupported construct `or`"),
        "{e}"
    );
    let e = domain_error(
        "(define (domain x) (:predicates (p ?x))\n (:action a :parameters (?x)\n  :effect (forall (?y) (p ?y))))",
    );
    assert!(
        e.starts_with("d.pddl:3:11: unsupported construct `forall`"),
        "{e}"
    );
    let e = domain_error("(define (domain x) (:types a - (either b c)))");
    assert!(e.contains("unsupported construct `either`"), "{e}");
    let e = domain_error("(define (domain x) (:derived (p) (q)))");
    assert!(e.contains("unsupported construct `:derived`"), "{e}");
}

#[test]
fn undefined_and_duplicate_names_are_errors() {
    let e = domain_error(
        "(define (domain x) (:predicates (p ?x))\n (:action a :parameters (?x) :precondition (q ?x) :effect (p ?x)))",
    );
    assert_eq!(e, "d.pddl:2:44: undefined predicate `q`");
    let e = domain_error(
        "(define (domain x) (:predicates (p ?x))\n (:action a :parameters (?x) :precondition (p ?y) :effect (p ?x)))",
    );
    assert_eq!(e, "d.pddl:2:47: undefined variable `?y`");
    let e = domain_error("(define (domain x) (:predicates (p ?x - thing)))");
    assert_eq!(e, "d.pddl:1:41: undefined type `thing`");
    let e = domain_error("(define (domain x) (:predicates (p ?x) (P ?y)))");
    assert_eq!(e, "d.pddl:1:40: duplicate predicate `p`");
    let e = problem_error(
        "(define (problem p) (:domain blocksworld) (:objects a b A) (:goal (clear a)))",
    );
    assert_eq!(e, "p.pddl:1:57: duplicate object `a`");
    let e = problem_error(
        "(define (problem p) (:domain blocksworld) (:objects a) (:init (clear z)) (:goal (clear a)))",
    );
    assert_eq!(e, "p.pddl:1:70: undefined object `z`");
}

#[test]
fn wrong_arity_is_an_error_in_domains_and_problems() {
    let e = domain_error(
        "(define (domain x) (:predicates (p ?x))\n (:action a :parameters (?x) :precondition (p ?x ?x) :effect (p ?x)))",
    );
    assert_eq!(e, "d.pddl:2:44: `p` takes 1 argument(s), found 2");
    let e = problem_error("(define (problem p) (:domain blocksworld) (:objects a) (:goal (on a)))");
    assert_eq!(e, "p.pddl:1:63: `on` takes 2 argument(s), found 1");
}

#[test]
fn empty_binary_and_wrong_domain_files() {
    assert_eq!(
        domain_error(""),
        "d.pddl:1:1: no PDDL here: the file is empty or holds only comments"
    );
    assert_eq!(
        domain_error("; only a comment\n"),
        "d.pddl:1:1: no PDDL here: the file is empty or holds only comments"
    );
    let e = parse_domain(b"(define\n (domain \xff))", "bin").unwrap_err();
    assert_eq!(
        e.to_string(),
        "bin:2:10: not a text file (invalid UTF-8 or a NUL byte)"
    );
    assert!(matches!(e.kind, PddlErrorKind::Binary));
    let e = problem_error("(define (problem p) (:domain logistics) (:goal (and)))");
    assert_eq!(
        e,
        "p.pddl:1:30: problem is for domain `logistics` but the domain is `blocksworld`"
    );
}

#[test]
fn every_shared_domain_and_problem_parses() {
    let Some(root) = crate::common::ipc_benchmarks() else {
        return;
    };
    let tasks = iterdeploy::benchmarks::collect(&root).unwrap();
    let mut domains = std::collections::HashMap::new();
    for t in &tasks {
        let d = domains
            .entry(t.domain.clone())
            .or_insert_with(|| iterdeploy::pddl::read_domain(&t.domain).unwrap());
        iterdeploy::pddl::read_problem(&t.problem, d).unwrap();
    }
    assert_eq!(domains.len(), 10);
    assert_eq!(tasks.len(), 1577);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    /// Arbitrary bytes never panic the readers.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_domain(&bytes, "fuzz");
        let d = parse_domain(BW.as_bytes(), "bw").unwrap();
        let _ = parse_problem(&bytes, "fuzz", &d);
        let _ = iterdeploy::plan::parse_ipc_plan(&bytes, "fuzz");
    }

    /// Mutations of a real domain (characters deleted, replaced, inserted)
    /// either parse or give an error whose position lies inside the text.
    #[test]
    fn mutated_domains_fail_inside_the_text(
        edits in proptest::collection::vec((0usize..2000, prop::sample::select(vec!['(', ')', ' ', '-', '?', 'x', ';', '\n', ':'])), 1..6)
    ) {
        let mut text: Vec<char> = BW.chars().collect();
        for (at, c) in edits {
            let at = at % (text.len() + 1);
            if c == 'x' && at < text.len() { text.remove(at); } else { text.insert(at, c); }
        }
        let text: String = text.into_iter().collect();
        if let Err(e) = parse_domain(text.as_bytes(), "m") {
            let lines = text.lines().count() as u32 + 1;
            prop_assert!(e.pos.line >= 1 && e.pos.line <= lines, "{e}");
        }
    }

    /// Any text in the extractor yields steps whose lines exist in the text.
    #[test]
    fn extractor_lines_exist(text in "[a-z0-9 ().:;*\\-\n]{0,400}") {
        let e = iterdeploy::extract::extract_plan(&text, &|n| n == "a" || n == "pickup");
        let lines = text.lines().count() as u32;
        for s in &e.steps {
            prop_assert!(s.line >= 1 && s.line <= lines);
        }
    }
}

/// Arguments of predicates are type-checked in action literals (variables
/// and constants), in `:init` and in the goal: an argument of another type
/// is an error at its position, as unified-planning has it, not an atom
/// that can never hold (issue 15, item 4).
#[test]
fn predicate_arguments_are_type_checked_everywhere() {
    let domain = |pre: &str| {
        format!(
            "(define (domain t) (:requirements :strips :typing)
               (:types block table)
               (:constants floor - table)
               (:predicates (on ?b - block ?t - table) (clear ?b - block))
               (:action put :parameters (?b - block ?t - table)
                 :precondition {pre} :effect (on ?b ?t)))"
        )
    };
    let ok = iterdeploy::pddl::parse_domain(domain("(clear ?b)").as_bytes(), "t.pddl").unwrap();
    for (pre, bad) in [
        ("(clear ?t)", "?t"),
        ("(on ?t ?t)", "?t"),
        ("(clear floor)", "floor"),
    ] {
        let e = iterdeploy::pddl::parse_domain(domain(pre).as_bytes(), "t.pddl")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.pddl:") && e.contains(&format!("`{bad}` has type")),
            "{pre}: {e}"
        );
    }
    let problem = |init: &str, goal: &str| {
        format!(
            "(define (problem p) (:domain t) (:objects a - block) (:init {init}) (:goal {goal}))"
        )
    };
    iterdeploy::pddl::parse_problem(
        problem("(clear a)", "(on a floor)").as_bytes(),
        "p.pddl",
        &ok,
    )
    .unwrap();
    for (init, goal, bad) in [
        ("(clear floor)", "(clear a)", "floor"),
        ("(clear a)", "(on a a)", "a"),
    ] {
        let e = iterdeploy::pddl::parse_problem(problem(init, goal).as_bytes(), "p.pddl", &ok)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("p.pddl:")
                && e.contains(&format!("`{bad}` has type"))
                && e.contains("which is not a"),
            "{init} / {goal}: {e}"
        );
    }
}
