; The tower b1 on b2 on b3; put b3 on b1, with b1 on the table (6 steps).
(define (problem blocksworld-3b)
  (:domain blocksworld)
  (:objects b1 b2 b3)
  (:init (arm-empty) (on-table b3) (on b2 b3) (on b1 b2) (clear b1))
  (:goal (and (on b3 b1) (on-table b1))))
