--- Experiment 5: learned neural optimizers, train-by-train vs train-by-validation.
-- Waits for the "Learned neural optimizers" issue; until then it measures nothing, writes no
-- files, and its section says NOT RUN.
local M = {title = "Neural optimizers: train-by-train vs train-by-validation"}

--- Nothing to measure yet.
function M.measure()
  return {}
end

--- No files yet.
function M.write() end

--- The NOT RUN section: the claim and why it has no evidence.
function M.describe()
  return {
    skipped = true,
    claim = "With few samples a neural optimizer meta-trained on the training loss overfits, " ..
      "while meta-training on a validation split does well (paper, Section 6).",
    notes = "Not run: the learned neural optimizer (issue \"Learned neural optimizers\") has not " ..
      "landed in metastep yet, so this section has no evidence and no verdict.",
  }
end

return M
