; Four blocks: reverse the tower a-b-c-d (a on top) into d-c-b-a.
(define (problem blocksworld-4)
  (:domain blocksworld)
  (:objects a b c d)
  (:init (arm-empty) (on-table d) (on c d) (on b c) (on a b) (clear a))
  (:goal (and (on d c) (on c b) (on b a) (on-table a))))
