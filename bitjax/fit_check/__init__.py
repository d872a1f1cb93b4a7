"""Will a recipe's step fit, and how fast could it run? Ahead-of-time compiles for TPU slices on a CPU.

  check           `bitjax fit-check`: compile the step for a topology; memory per chip, roofline, MFU bound
  flops           analytic FLOPs of a step (6NT, causal attention, remat recomputation)
  hlo_facts       what the compiled HLO holds (L x L arrays, float32 logits, int8 dots, all-reduces)
"""
