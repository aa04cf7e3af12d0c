--- The test problems experiments share, so that no experiment loads another.
local oracle = require "lib.oracle"

local M = {}

local D = 20

--- The quadratic of experiments 1 and 2 for cfg: H (a tensor) and a description of it. The
-- default and --quick use eigenvalues evenly spaced in [1, 10]; --full the paper's H = XᵀX.
function M.quadratic(cfg, ms)
  if cfg.mode == "full" then
    return oracle.paper_quadratic(ms, D, 1000 * cfg.seed + 1),
      "H = XᵀX, X a 20×20 standard Gaussian matrix (the paper's quadratic)"
  end
  return ms.objective.random_quadratic{d = D, eigenvalues = {1, 10}, seed = 1000 * cfg.seed + 1}.H,
    "H = Q diag(λ) Qᵀ, d = 20, λ evenly spaced in [1, 10], Q a random rotation"
end

--- The starting point w₀ ~ N(0, I) of experiments 1 and 2.
function M.start(cfg, ms)
  return ms.randn({D}, {seed = 1000 * cfg.seed + 2})
end

return M
