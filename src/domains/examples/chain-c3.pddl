; The toy chain of `iterdeploy verify` and docs/tutorial.md: four cells,
; start at c0, reach c3. With the horizon H = 5 every valid trace can be
; listed (`iterdeploy explain`).
(define (problem chain-c3)
  (:domain chain)
  (:objects c0 c1 c2 c3)
  (:init (at c0) (next c0 c1) (next c1 c2) (next c2 c3))
  (:goal (at c3)))
