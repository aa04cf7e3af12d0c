-- Benchmark: time per inner step of a 784-100-20-10 MLP (Fashion-MNIST-sized inputs, n = 1000
-- training images, mini-batches of 32) trained by the learned MLP optimizer
-- (ms.optim.learned_mlp, 80730 parameters, one [80730, 33] x [33, 32] product per layer),
-- without the tape (ms.meta.unroll) and with it (ms.meta.value_and_grad, reverse mode through
-- T steps: forward recording plus the backward sweep, per step). Each step also evaluates the
-- full-batch training loss (the unroll's trajectory). Random images, so no data set is needed.
-- The same steps in PyTorch: scripts/bench/peer_learned.py.
--
--   OPENBLAS_NUM_THREADS=1 build/metastep scripts/bench_learned.lua [T] [rounds]
local ms = require "metastep"

if arg and (arg[1] == "--help" or arg[1] == "-h") then
  print([[
usage: metastep scripts/bench_learned.lua [T] [rounds]
Times one inner step of a 784-100-20-10 MLP (random images, n = 1000, mini-batches of 32) trained
by the learned MLP optimizer, without the tape (ms.meta.unroll) and with it (reverse
meta-gradient); medians of CPU time. The PyTorch peer: /usr/bin/python3 scripts/bench/peer_learned.py
  T        inner steps per timing (default: 10)
  rounds   timed runs per variant (default: 3)
  --help   print this help and exit
Steadier with OPENBLAS_NUM_THREADS=1.]])
  os.exit(0)
end

local T = tonumber(arg and arg[1]) or 10
local rounds = tonumber(arg and arg[2]) or 3
local layers = {784, 100, 20, 10}
ms.seed(1)
local X = ms.rand({1000, 784})
local y = ms.floor(ms.mul(ms.rand({1000}), 10))
local obj = ms.objective.mlp{layers = layers, X = X, y = y}
local w0 = ms.nn.mlp_init(layers, {seed = 1})
local opt = ms.optim.learned_mlp{seed = 0, batch = 32, batch_seed = 1}

local function median(f)
  local ts = {}
  for r = 1, rounds do
    local t0 = os.clock()
    f()
    ts[r] = os.clock() - t0
  end
  table.sort(ts)
  return ts[(rounds + 1) // 2]
end

local untaped = median(function() ms.meta.unroll{objective = obj, optimizer = opt, w0 = w0, steps = T} end)
local taped = median(function()
  ms.meta.value_and_grad{objective = obj, optimizer = opt, w0 = w0, steps = T, meta = "sum"}
end)
print(("learned MLP optimizer, 784-100-20-10 (%d parameters), batch 32, n = 1000, T = %d, median of %d"):format(
  w0:numel(), T, rounds))
print(("  without tape (unroll):                 %8.2f ms per inner step"):format(1000 * untaped / T))
print(("  with tape (reverse meta-gradient):     %8.2f ms per inner step"):format(1000 * taped / T))
