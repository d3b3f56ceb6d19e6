; A chain of cells: move forward or back along `next` links. The toy
; setting of `iterdeploy verify`, small enough to enumerate every trace.
(define (domain chain)
  (:requirements :strips)
  (:predicates (at ?c) (next ?a ?b))
  (:action forward
    :parameters (?a ?b)
    :precondition (and (at ?a) (next ?a ?b))
    :effect (and (not (at ?a)) (at ?b)))
  (:action back
    :parameters (?a ?b)
    :precondition (and (at ?b) (next ?a ?b))
    :effect (and (not (at ?b)) (at ?a))))
