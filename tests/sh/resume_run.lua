-- A small meta-training run for tests/sh/test_resume.sh:
--   metastep resume_run.lua VARIANT MODE ITERATIONS CHECKPOINT LOG OUT [HANG_AT MARK]
-- VARIANT: gd (sampled batches of least-squares tasks), adam (the same with Adam), randn (Adam,
-- tasks whose w0 comes from the context's generator). MODE: full (no checkpoint), ckpt
-- (checkpoint every iteration; at iteration HANG_AT the callback writes MARK and hangs, to
-- be killed), resume (continue from CHECKPOINT, still checkpointing). OUT receives the
-- result, every double in hex, so two runs compare bit for bit with cmp.
local ms = require "metastep"
local variant, mode, K, ckpt, log, out = arg[1], arg[2], math.tointeger(tonumber(arg[3])), arg[4], arg[5], arg[6]
local hang_at, mark = math.tointeger(tonumber(arg[7] or "")), arg[8]

local opts = {optimizer = ms.optim.gd{lr = 0.05}, steps = 8, meta = "valid_log", iterations = K,
              meta_lr = 0.05, progress = false, log = log, batch = 2,
              meta_optimizer = variant == "gd" and "gd" or "adam"}
if variant == "randn" then
  local task = ms.tasks.least_squares{d = 4, n_train = 6, n_valid = 4, n_test = 0, seed = 9}()
  opts.sample = function() return {objective = task.objective, valid_objective = task.valid_objective,
                                   w0 = ms.randn{4}} end
else
  opts.sample = ms.tasks.least_squares{d = 4, n_train = 6, n_valid = 4, n_test = 0, seed = 5}
end
if mode == "ckpt" then
  opts.checkpoint = ckpt
  opts.callback = function(k)
    if k == hang_at then
      local f = assert(io.open(mark, "w"))
      f:close()
      while true do end -- killed here (SIGKILL) by the test
    end
  end
elseif mode == "resume" then
  opts.checkpoint, opts.resume = ckpt, ckpt
end

local res = ms.meta.train(opts)
local f = assert(io.open(out, "w"))
local function hex(v)
  if type(v) == "number" then return ("%a"):format(v) end
  local parts = {}
  for i, x in ipairs(v:reshape(v:numel()):totable()) do parts[i] = ("%a"):format(x) end
  return table.concat(parts, " ")
end
f:write("theta ", hex(res.theta.lr), "\n")
f:write("best ", res.best_k, " ", hex(res.best_value), " ", hex(res.best_theta.lr), "\n")
f:write("stopped ", res.stopped, " n ", #res.history, "\n")
for _, r in ipairs(res.history) do
  f:write(r.k, " ", hex(r.value), " ", r.status, " ", hex(r.theta.lr), " ", hex(r.grad.lr), "\n")
end
f:write("next randn ", hex(ms.randn{2}), "\n")
f:close()
