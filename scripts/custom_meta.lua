-- A new meta-objective in a few lines, with no C change: the mean of the log-losses
-- over the last half of the trajectory. Meta-trains the step size of GD with it, by
-- back-propagation through the unroll, and compares with the built-in log objective.
-- Usage: metastep scripts/custom_meta.lua [T] [iterations]
local ms = require "metastep"

if arg and (arg[1] == "--help" or arg[1] == "-h") then
  print([[
usage: metastep scripts/custom_meta.lua [T] [iterations]
Meta-trains the step size of GD with a user-defined meta-objective (mean log-loss over the
last half of the trajectory) and compares it with the built-in log objective.
  T            unroll length (default: 40)
  iterations   meta-training iterations (default: 200)
  --help       print this help and exit]])
  os.exit(0)
end
local T = tonumber(arg and arg[1]) or 40
local iterations = tonumber(arg and arg[2]) or 200

local function last_half_log(traj)
  local s, n = 0, 0
  for t = math.floor(traj.T / 2) + 1, traj.T do
    s, n = s + ms.log(traj.losses[t]), n + 1
  end
  return s / n
end

local obj = ms.objective.random_quadratic{d = 20, eigenvalues = {1, 10}, seed = 1}
local w0 = ms.randn({20}, {seed = 2})

-- The two objectives differ in scale (the last-half sum is not divided by T), so each
-- gets its own meta step size.
for _, meta in ipairs{{"last-half mean log-loss", last_half_log, 0.001}, {"log f(w_T) / T", "log", 0.01}} do
  local run = ms.meta.train{
    objective = obj, w0 = w0, optimizer = ms.optim.gd{lr = 0.01}, steps = T,
    meta = meta[2], method = "reverse", iterations = iterations,
    meta_lr = meta[3], schedule = "inv_sqrt", progress = false,
  }
  local last = run.history[#run.history]
  print(("%-24s learned lr = %.5f  (meta-loss %.6f, status %s)"):format(meta[1], run.theta.lr, last.value, last.status))
end
print(("2 / (lambda_min + lambda_max) = %.5f"):format(2 / 11))
