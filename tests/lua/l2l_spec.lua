-- The learning-to-learn layer as it runs in the engine: tensor-valued meta-parameters,
-- checkpointing, the stable method beyond GD on quadratics, and the exact messages for bad
-- input. Golden values come from closed forms written here.
local ms = require "metastep"
local h = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "tests/lua") .. "/helpers.lua")
local err_of, rel = h.err_of, h.rel

-- f(w_T) of GD with per-coordinate step sizes eta on 1/2 w^T diag(l) w from c:
-- 1/2 sum_i l_i c_i^2 (1 - eta_i l_i)^(2T); G = (1/T) log f and dG/deta_i.
local function closed_G(l, c, eta, T)
  local a, m = {}, -math.huge
  for i = 1, #l do
    local q = 1 - eta[i] * l[i]
    a[i] = math.log(0.5 * l[i] * c[i] ^ 2) + 2 * T * math.log(math.abs(q))
    m = math.max(m, a[i])
  end
  local s = 0
  for i = 1, #l do s = s + math.exp(a[i] - m) end
  local ll = m + math.log(s)
  local g = {}
  for i = 1, #l do g[i] = math.exp(a[i] - ll) * 2 * (-l[i]) / (1 - eta[i] * l[i]) end
  return ll / T, g
end

local L = {1, 3, 5, 9}
local C = {0.7, -1.2, 0.4, 1}
local OBJ = ms.objective.quadratic(ms.diag(ms.tensor(L)))
local W0 = ms.tensor(C)

describe("tensor-valued meta-parameters", function()
  it("a step size per coordinate: every method gives the closed form's gradient per coordinate", function()
    local eta = {0.1, 0.05, 0.02, 0.03}
    local G, g = closed_G(L, C, eta, 25)
    for _, m in ipairs{"reverse", "forward", "fd"} do
      local r = ms.meta.value_and_grad{objective = OBJ, w0 = W0, optimizer = ms.optim.gd{lr = ms.tensor(eta)},
                                       steps = 25, meta = "log", method = m}
      assert.are.equal("ok", r.status)
      assert.is_true(rel(r.value, G) < 1e-12, m)
      assert.is_true(ms.is_tensor(r.grad.lr), m)
      local got = r.grad.lr:totable()
      for i = 1, 4 do assert.is_true(rel(got[i], g[i]) < (m == "fd" and 1e-6 or 1e-10), m .. " " .. i) end
    end
  end)

  it("meta-training per-coordinate step sizes reaches the per-coordinate optimum of the log objective", function()
    -- f = 1 + 1/2 sum_i l_i w_i^2 (f* = 1 keeps the log finite), w0 = 1, T = 1:
    -- G(eta) = log(1 + 1/2 sum_i l_i (1 - eta_i l_i)^2), minimized exactly at eta_i = 1/l_i
    local l = {1, 2, 3, 4}
    local obj = ms.objective.quadratic(ms.diag(ms.tensor(l)), {fstar = 1})
    local run = ms.meta.train{objective = obj, w0 = ms.ones(4), optimizer = ms.optim.gd{lr = ms.tensor{0.5, 0.3, 0.2, 0.1}},
                              steps = 1, meta = "log", method = "reverse", iterations = 1500, meta_lr = 0.02,
                              schedule = "constant", progress = false}
    assert.is_true(ms.is_tensor(run.theta.lr))
    local got = run.theta.lr:totable()
    for i = 1, 4 do assert.is_true(math.abs(got[i] - 1 / l[i]) < 1e-6, ("%d: %.12g"):format(i, got[i])) end
    assert.are.equal("done", run.stopped)
    assert.are.equal(1500, #run.history)
    assert.is_true(ms.is_tensor(run.history[1].grad.lr))
  end)

  it("a theta of the wrong shape names the parameter, the expected and the actual shape", function()
    assert.are.equal("meta: meta-parameter 'lr' of optimizer 'gd' must have shape [4], got [3]", err_of(function()
      ms.meta.value_and_grad{objective = OBJ, w0 = W0, optimizer = ms.optim.gd{lr = ms.tensor{0.1, 0.1, 0.1, 0.1}},
                             steps = 5, theta = {lr = ms.tensor{0.1, 0.1, 0.1}}}
    end))
  end)
end)

describe("checkpointed reverse mode", function()
  it("gives the plain reverse mode's meta-gradient bit for bit", function()
    for _, opt in ipairs{ms.optim.gd{lr = 0.05}, ms.optim.momentum{lr = 0.02, beta = 0.7},
                         ms.optim.adam{lr = 0.01, log_lr = true}} do
      for _, meta in ipairs{"log", "logsum"} do
        local spec = {objective = OBJ, w0 = W0, optimizer = opt, steps = 23, meta = meta}
        local plain = ms.meta.value_and_grad(spec)
        for _, K in ipairs{1, 4, 23, 50} do
          spec.checkpoint = K
          local ck = ms.meta.value_and_grad(spec)
          assert.are.equal(plain.value, ck.value)
          for k, v in pairs(plain.grad) do assert.are.equal(v, ck.grad[k], opt.name .. " " .. meta .. " " .. K) end
        end
      end
    end
  end)
end)

describe("the stable method on least squares and with momentum", function()
  it("agrees with reverse mode where doubles suffice, train-by-train and train-by-validation", function()
    local X = ms.randn({6, 10}, {seed = 1})
    local y = ms.randn({6}, {seed = 2})
    local Xv, yv = ms.randn({5, 10}, {seed = 3}), ms.randn({5}, {seed = 4})
    local task = {objective = ms.objective.least_squares(X, y), valid_objective = ms.objective.least_squares(Xv, yv),
                  w0 = ms.randn({10}, {seed = 5})}
    for _, opt in ipairs{ms.optim.gd{lr = 0.1}, ms.optim.momentum{lr = 0.05, beta = 0.5}, ms.optim.nesterov{lr = 0.05}} do
      for _, meta in ipairs{"log", "sum", "valid", "valid_logsum"} do
        local spec = {task = task, optimizer = opt, steps = 40, meta = meta, method = "reverse"}
        local r = ms.meta.value_and_grad(spec)
        spec.method = "stable"
        local s = ms.meta.value_and_grad(spec)
        assert.are.equal("ok", s.status)
        assert.is_true(rel(s.value, r.value) < 1e-10, opt.name .. " " .. meta)
        for k, v in pairs(r.grad) do assert.is_true(rel(s.grad[k], v) < 1e-8, opt.name .. " " .. meta .. " " .. k) end
      end
    end
  end)
end)

describe("finite differences at tiny step sizes", function()
  it("the issue's case: eigenvalues in [1e3, 1e6], T = 50, lr = 1e-6 gives G' = -21677.90672", function()
    local l, c = {}, {}
    for i = 1, 20 do l[i], c[i] = 10 ^ (3 + 3 * (i - 1) / 19), 1 end
    -- the closed form, skipping the coordinate where 1 - eta l is exactly 0 (its weight is 0)
    local a, m = {}, -math.huge
    for i = 1, 20 do
      local q = 1 - 1e-6 * l[i]
      a[i] = q == 0 and -math.huge or math.log(0.5 * l[i]) + 100 * math.log(math.abs(q))
      m = math.max(m, a[i])
    end
    local s = 0
    for i = 1, 20 do s = s + math.exp(a[i] - m) end
    local ll, want = m + math.log(s), 0
    for i = 1, 20 do
      if a[i] > -math.huge then want = want + math.exp(a[i] - ll) * 2 * (-l[i]) / (1 - 1e-6 * l[i]) end
    end
    assert.is_true(rel(want, -21677.90672) < 1e-9)
    local r = ms.meta.value_and_grad{objective = ms.objective.quadratic(ms.diag(ms.tensor(l))), w0 = ms.tensor(c),
                                     optimizer = ms.optim.gd{lr = 1e-6}, steps = 50, meta = "log", method = "fd"}
    assert.is_true(r.status ~= "ok" or rel(r.grad.lr, want) < 1e-6, ("%.10g"):format(r.grad.lr))
    assert.are.equal("ok", r.status)
  end)
end)

describe("bad input, with the exact messages", function()
  local function spec(extra)
    local s = {objective = OBJ, w0 = W0, optimizer = ms.optim.gd{lr = 0.1}, steps = 5}
    for k, v in pairs(extra or {}) do s[k] = v end
    return s
  end

  it("an unknown option", function()
    assert.are.equal("meta: unknown option 'step' (did you mean 'steps'?)",
      err_of(function() ms.meta.value_and_grad(spec{step = 5}) end))
    assert.are.equal("meta.train: unknown option 'iteration' (did you mean 'iterations'?)",
      err_of(function() ms.meta.train(spec{iteration = 3}) end))
    assert.are.equal("meta: unknown option 'lr'", err_of(function() ms.meta.value(spec{lr = 0.1}) end))
    assert.are.equal("optim.gd: unknown option 'momentum' (expected lr, log_lr, schedule)",
      err_of(function() ms.optim.gd{lr = 0.1, momentum = 0.9} end))
    assert.are.equal("meta: unknown meta-parameter 'beta' (optimizer 'gd' has lr)",
      err_of(function() ms.meta.value_and_grad(spec{theta = {beta = 0.5}}) end))
  end)

  it("a user meta-objective cut off from the trajectory", function()
    local msg = "meta: the meta-objective returned a Lua number, which carries no derivative; return a tensor " ..
                "computed from traj.losses or traj.w_T (a number from :item() is cut off from the trajectory)"
    local function number(traj) return math.log(traj.losses[traj.T]:item()) / traj.T end
    for _, m in ipairs{"reverse", "forward"} do
      assert.are.equal(msg, err_of(function() ms.meta.value_and_grad(spec{meta = number, method = m}) end))
    end
    -- a tensor rebuilt from :item() is detached too: the engine says so
    local function rebuilt(traj) return ms.tensor(traj.losses[traj.T]:item()) end
    assert.are.equal("meta: the meta-objective 'function' returned a value cut off from the trajectory (it does " ..
                     "not depend on theta, so its meta-gradient would be 0); compute it with tensor operations " ..
                     "from the trajectory's losses or w_T, not from plain numbers",
      err_of(function() ms.meta.value_and_grad(spec{meta = rebuilt}) end))
    -- finite differences need values only: a number is fine there
    local r = ms.meta.value_and_grad(spec{meta = number, method = "fd"})
    local ref = ms.meta.value_and_grad(spec{meta = "log", method = "reverse"})
    assert.is_true(rel(r.grad.lr, ref.grad.lr) < 1e-6)
  end)

  it("an indefinite H for stable and exact", function()
    local obj = ms.objective.quadratic(ms.tensor{{1, 0}, {0, -0.5}})
    for _, m in ipairs{"stable", "exact"} do
      assert.are.equal(("meta: method '%s': needs a positive semi-definite H (smallest eigenvalue -0.5, largest 1)"):format(m),
        err_of(function()
          ms.meta.value_and_grad{objective = obj, w0 = ms.ones(2), optimizer = ms.optim.gd{lr = 0.1}, steps = 3,
                                 meta = "log", method = m}
        end))
    end
  end)

  it("options the method would ignore are refused", function()
    assert.are.equal("meta: 'checkpoint' applies to method 'reverse', not 'forward'",
      err_of(function() ms.meta.value_and_grad(spec{checkpoint = 2, method = "forward"}) end))
    assert.are.equal("meta: 'fd_step' applies to method 'fd', not 'reverse'",
      err_of(function() ms.meta.value_and_grad(spec{fd_step = 1e-4}) end))
    assert.are.equal("meta: 'freeze_norm' must be a finite number > 0, got -1",
      err_of(function() ms.meta.value_and_grad(spec{freeze_norm = -1}) end))
    assert.are.equal("meta.train: option 'clip' must be > 0, got -1",
      err_of(function() ms.meta.train(spec{clip = -1, iterations = 1}) end))
    assert.are.equal("meta.train: option 'meta_lr' must be >= 0, got -0.5",
      err_of(function() ms.meta.train(spec{meta_lr = -0.5, iterations = 1}) end))
    for _, bad in ipairs{-5, 1.5, 0 / 0} do
      local msg = err_of(function() ms.meta.train(spec{iterations = bad}) end)
      assert.truthy(msg:find("option 'iterations' must be an integer >= 0", 1, true))
    end
  end)

  it("review findings stay fixed", function()
    local Q, W = ms.objective.quadratic(ms.eye(2)), ms.ones(2)
    -- an optimizer made in a coroutine outlives it (ASan in CI would catch a stale thread)
    local o
    coroutine.wrap(function() o = ms.optim.gd{lr = 0.1, schedule = function() return 1 end} end)()
    collectgarbage()
    assert.are.equal("ok", ms.meta.value_and_grad{objective = Q, w0 = W, optimizer = o, steps = 3}.status)
    o = nil -- luacheck: ignore 311 (dropping the last reference is the point)
    collectgarbage()
    -- Lua-defined optimizers are collected (no reference cycle through the registry)
    collectgarbage()
    local m0 = ms.memory()
    for _ = 1, 200 do ms.optim.new{theta = {lr = 0.1}, step = function(t, _, w, _, g) return w - g * t.lr end} end
    collectgarbage()
    collectgarbage()
    assert.are.equal(m0, ms.memory())
    -- sampled tasks take the spec's w0 when they have none
    local r = ms.meta.train{optimizer = ms.optim.gd{lr = 0.1}, steps = 3, w0 = W, iterations = 2, progress = false,
                            sample = function() return {objective = Q} end}
    assert.are.equal("ok", r.history[1].status)
    assert.are.equal("meta.train: 'sample' draws the tasks: give it instead of 'objective', 'task' or 'tasks'",
      err_of(function() ms.meta.train{objective = Q, optimizer = ms.optim.gd{lr = 0.1}, steps = 3,
                                      sample = function() return {objective = Q} end} end))
    -- an objective's error object reaches the caller unchanged
    local f = ms.objective.from_function(function() error({code = 42}) end, {dim = 2})
    local ok, e = pcall(ms.meta.value_and_grad, {objective = f, optimizer = ms.optim.gd{lr = 0.1}, steps = 3})
    assert.is_false(ok)
    assert.are.equal(42, e.code)
    -- an engine error is blamed on the caller's line
    local here = debug.getinfo(1, "S").short_src
    local _
    _, e = pcall(function()
      ms.meta.value_and_grad{objective = Q, w0 = W, optimizer = ms.optim.gd{lr = ms.ones(3)}, steps = 3}
    end)
    assert.are.equal(here, e:match("^(.-):%d+: "))
    assert.truthy(e:find("mul: shapes [2] and [3] do not broadcast", 1, true))
    -- optim.new refuses what it does not know
    assert.are.equal("optim.new: unknown field 'stepp' (expected name, theta, init, step) (did you mean 'step'?)",
      err_of(function() ms.optim.new{theta = {lr = 0.1}, stepp = 1, step = print} end))
    -- value() needs values only: a Lua number from a custom meta-objective is fine there
    local v = ms.meta.value{objective = Q, w0 = W, optimizer = ms.optim.gd{lr = 0.1}, steps = 3,
                            meta = function(t) return t.losses[3]:item() end}
    assert.is_true(math.abs(v - 0.9 ^ 6) < 1e-15)
  end)
end)

describe("the binding's own checks", function()
  it("a 'select' entry out of range is named as Lua numbers it", function()
    local opt = ms.optim.gd{lr = 0.1}
    local spec = {optimizer = opt.c, steps = 2, select = {1, 2},
                  tasks = {{objective = ms.objective.quadratic(ms.eye(2)), w0 = ms.ones(2)}}}
    assert.are.equal("meta: 'params' names 2 parameters, the optimizer has 1",
      err_of(function() return ms.core.meta_value(spec) end))
    spec.select = {2}
    assert.are.equal("meta: 'select' entry 1 is 2, expected 1..1", err_of(function() return ms.core.meta_value(spec) end))
    spec.select = {0}
    assert.are.equal("meta: 'select' entry 1 is 0, expected 1..1", err_of(function() return ms.core.meta_value(spec) end))
  end)
end)
