-- Benchmark: a T-step GD unroll with its reverse-mode meta-gradient, driven from Lua,
-- before and after the learning-to-learn layer moved into the engine.
--
--   OPENBLAS_NUM_THREADS=1 build/metastep scripts/bench_meta.lua [T] [d] [rounds]
--
-- "Lua-level unroll" is the loop the front library ran before the move (metastep 0.1): every
-- step crosses the interpreter several times (the gradient, the update, the finiteness
-- check, the loss and its status). "engine unroll" is one call of ms.meta.value_and_grad.
-- Both compute the same number (checked); medians of `rounds` runs, CPU time.
local ms = require "metastep"
local core = ms.core

if arg and (arg[1] == "--help" or arg[1] == "-h") then
  print([[
usage: metastep scripts/bench_meta.lua [T] [d] [rounds]
Times a T-step GD unroll with its reverse meta-gradient: the Lua-level loop of metastep 0.1
against one engine call (ms.meta.value_and_grad); medians of CPU time.
  T        unroll length (default: 10000)
  d        dimension of the quadratic (default: 10)
  rounds   timed runs per variant (default: 5)
  --help   print this help and exit
Steadier with OPENBLAS_NUM_THREADS=1.]])
  os.exit(0)
end
local T = tonumber(arg and arg[1]) or 10000
local d = tonumber(arg and arg[2]) or 10
local rounds = tonumber(arg and arg[3]) or 5

local obj = ms.objective.random_quadratic{d = d, eigenvalues = {1, 10}, seed = 1}
local w0 = ms.randn({d}, {seed = 2})
local lr = 0.01 -- keeps f(w_T) a normal double at T = 10000 (about 1e-88)

-- The former Lua-level unroll and reverse mode, as metastep 0.1's front library ran them
-- (meta.lua's unroll and methods.reverse, optim.lua's gd step, objective.lua's wrapper that
-- checked w's shape in Lua before calling the C objective), replicated here operation by
-- operation so that "before" is measured on this build.
local function lua_level()
  local function check(o, w) -- objective.lua: Objective:_check
    if getmetatable(w) ~= core.Tensor_mt then error("w must be a tensor") end
    local s = w:shape()
    if #s ~= 1 or s[1] ~= o:dim() then error("bad shape") end
  end
  local wrapped = {value = function(_, w) check(obj, w); return obj:value(w) end,
                   grad = function(_, w) check(obj, w); return obj:grad(w) end}
  local opt = {log_lr = false}
  local function lr_at(theta) -- optim.lua: step_size without a schedule
    local l = opt.log_lr and core.exp(theta.log_lr) or theta.lr
    if opt.schedule then l = l * opt.schedule() end
    return l
  end
  function opt.step(theta, state, w, _, g, t) return w - g * lr_at(theta, t), state end
  local function loss_status(v)
    if v ~= v then return "nan" end
    if v == math.huge or v == -math.huge then return "overflow" end
    if v == 0 or math.abs(v) < 2.2250738585072014e-308 then return "underflow" end
  end
  local tape <close> = core.ad_push("reverse")
  local theta = {lr = tape:watch(ms.tensor(lr))}
  local w, state, losses = w0, {}, {}
  local fw = wrapped:value(w)
  for t = 1, T do
    local gw = wrapped:grad(w)
    w, state = opt.step(theta, state, w, fw, gw, t)
    if not core.all_finite(w) then error("overflow") end
    fw = wrapped:value(w)
    if loss_status(fw:item()) then error("bad loss") end
    losses[t] = fw
  end
  local v = core.log(losses[T]) / T
  tape:pop()
  local g = tape:gradient(v, {theta.lr})
  return v:item(), g[1]:item()
end

local function engine()
  local r = ms.meta.value_and_grad{objective = obj, w0 = w0, optimizer = ms.optim.gd{lr = lr}, steps = T,
                                   meta = "log", method = "reverse"}
  return r.value, r.grad.lr
end

local function median(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end

local function time(f)
  local ts, v, g = {}, nil, nil
  for i = 1, rounds do
    collectgarbage()
    local t0 = os.clock()
    v, g = f()
    ts[i] = os.clock() - t0
  end
  return median(ts), v, g
end

local t_lua, v1, g1 = time(lua_level)
local t_eng, v2, g2 = time(engine)
local agree = math.abs(g1 - g2) <= 1e-12 * math.abs(g1) and math.abs(v1 - v2) <= 1e-12 * math.abs(v1)
print(("GD unroll, T = %d, d = %d, reverse mode, log meta-objective (median of %d, CPU seconds)"):format(T, d, rounds))
print(("%-22s %10s %12s %14s"):format("", "time", "per step", "dG/dlr"))
print(("%-22s %9.4fs %10.2f us %14.8g"):format("Lua-level unroll", t_lua, t_lua / T * 1e6, g1))
print(("%-22s %9.4fs %10.2f us %14.8g"):format("engine unroll", t_eng, t_eng / T * 1e6, g2))
print(("speed-up %.1fx; results agree to 1e-12: %s"):format(t_lua / t_eng, tostring(agree)))
if not agree then os.exit(1) end
