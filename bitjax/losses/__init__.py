"""What the student is trained to minimise.

  objectives      the OBJECTIVES table (ce, kd, sft, redi): what each source's rows are trained on, and how a
                  mixed batch's rows become one loss
  terms           the per-token terms training runs: log-probabilities, top-k KD (every DIVERGENCE), REDI
  chunked_head    the LM head and the per-token terms block by block: no (B, L, V) array in the step
  relation        BitDistill's attention-relation loss (MiniLMv2 Q-Q, K-K, V-V relations of one block)
"""
