"""Will a recipe's step fit, and how fast could it run? Estimated by compiling for a TPU slice on a CPU
(fit-check), measured by running it on the devices present (bench).

  check           `bitjax fit-check`: compile the step for a topology; memory per chip, roofline, MFU bound
  report          what it reports: memory, the three roofline terms (compute, HBM, collectives), MFU, JSON
  collectives     the bytes each collective of a compiled step moves per step, by kind and dtype
  hardware        the chips' figures (TPU generations, NVIDIA GPUs) and the TPU slices
  flops           analytic FLOPs of a step (6NT, causal attention, remat recomputation, the int8 part)
  hlo_facts       what the compiled HLO holds (L x L arrays, float32 logits, int8 dots, all-reduces)
  bench           `bitjax bench`: the real step timed where it runs, against its dense bf16 twin
"""
