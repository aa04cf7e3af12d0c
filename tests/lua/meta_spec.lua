-- Meta-gradients of gradient descent on a quadratic, checked against an independent
-- closed form in plain Lua numbers: the oracle shared with the paper reproduction
-- (scripts/experiments/lib/oracle.lua). H = Q diag(lambda) Q^T is built here from known
-- eigenvalues and an orthogonal Q, and with c = Q^T w0
--   log f(w_T) = logsumexp_i [log(1/2 lambda_i c_i^2) + 2T log|1 - eta lambda_i|]
--   G'(eta)    = sum_i p_i * (-2 lambda_i / (1 - eta lambda_i))   (p = softmax of the terms)
--   log|F'(eta)| = log f(w_T) + log(T |G'(eta)|)                 (F = f(w_T) = exp(T G))
-- Then the paper's claims (docs/paper.md, part 1 and 2): the naive meta-gradient vanishes or
-- explodes exponentially in T while the log one stays bounded; back-propagation through
-- a long unroll fails where the stable method does not; meta-gradient descent on G finds
-- the best step size; train-by-validation beats train-by-train with few noisy samples.
-- Last, the boundary: bad specs raise with the exact messages below.
local ms = require "metastep"
local h = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "tests/lua") .. "/helpers.lua")

-- The oracle lives with the experiments: scripts/experiments/lib, two levels above this file.
do
  local dir = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "tests/lua"
  package.path = dir .. "/../../scripts/experiments/?.lua;" .. package.path
end
local oracle = require "lib.oracle"

-- ---------------------------------------------------------------- the problem, in plain Lua

local D = 20
local LAM = {} -- eigenvalues evenly spaced in [1, 10]
for i = 1, D do LAM[i] = 1 + 9 * (i - 1) / (D - 1) end
local LMAX = LAM[D]

-- Q only has to be orthogonal; ms.qr supplies it and the check below verifies it in plain Lua.
local Q = ms.qr(ms.randn({D, D}, {seed = 7})):totable()
local W0 = ms.randn({D}, {seed = 11}):totable()

local H = {}
for i = 1, D do H[i] = {} end
for i = 1, D do
  for j = i, D do
    local s = 0
    for k = 1, D do s = s + Q[i][k] * LAM[k] * Q[j][k] end
    H[i][j], H[j][i] = s, s -- exactly symmetric
  end
end

local C = {} -- coordinates of w0 in the eigenbasis
for k = 1, D do
  local s = 0
  for i = 1, D do s = s + Q[i][k] * W0[i] end
  C[k] = s
end

local OBJ = ms.objective.quadratic(ms.tensor(H))
local W0T = ms.tensor(W0)

local SP = oracle.spectrum(LAM, C)

--- The log meta-objective G = (1/T) log f(w_T) and G'(eta).
local function closed_log(eta, T)
  local cf = oracle.closed_form(SP, eta, T)
  return cf.logf / T, cf.dG
end

--- log |F'(eta)| for the naive meta-objective F = f(w_T).
local function closed_naive_log_abs_grad(eta, T)
  return oracle.closed_form(SP, eta, T).log_abs_dF
end

--- max_i |1 - eta lambda_i|
local function rho(eta) return oracle.rho(SP, eta) end

local function rel(a, b) return math.abs(a - b) / math.max(math.abs(b), 1e-300) end

local function vg(eta, T, meta, method)
  return ms.meta.value_and_grad{objective = OBJ, optimizer = ms.optim.gd{lr = eta}, w0 = W0T,
                                steps = T, meta = meta, method = method}
end

-- The step-size grid 0.01, 0.03, ..., 0.49: both sides of 2/lambda_max = 0.2, and
-- 0.19 = 1/lambda_10 exactly, where one eigen-direction is solved in one step.
local GRID = {}
for k = 0, 24 do GRID[#GRID + 1] = 0.01 + 0.02 * k end

local TOL = 1e-8

-- ---------------------------------------------------------------- the oracle itself

describe("closed-form oracle", function()
  it("Q is orthogonal and H has the eigenvalues it was built from", function()
    local worst = 0
    for i = 1, D do
      for j = 1, D do
        local s = 0
        for k = 1, D do s = s + Q[k][i] * Q[k][j] end
        worst = math.max(worst, math.abs(s - (i == j and 1 or 0)))
      end
    end
    assert.is_true(worst < 1e-13, "Q^T Q - I: " .. worst)
    -- H q_k = lambda_k q_k, in plain Lua
    local res = 0
    for k = 1, D do
      for i = 1, D do
        local s = 0
        for j = 1, D do s = s + H[i][j] * Q[j][k] end
        res = math.max(res, math.abs(s - LAM[k] * Q[i][k]))
      end
    end
    assert.is_true(res < 1e-12, "H q - lambda q: " .. res)
  end)

  it("matches a direct plain-Lua unroll where doubles suffice", function()
    -- f(w_T) by iterating w <- w - eta H w in plain Lua, T = 10
    for _, eta in ipairs{0.05, 0.3} do
      local w = {}
      for i = 1, D do w[i] = W0[i] end
      for _ = 1, 10 do
        local hw = h.matvec(H, w)
        for i = 1, D do w[i] = w[i] - eta * hw[i] end
      end
      local f = 0
      for i = 1, D do
        local s = 0
        for j = 1, D do s = s + H[i][j] * w[j] end
        f = f + 0.5 * w[i] * s
      end
      local G = closed_log(eta, 10)
      assert.is_true(rel(G, math.log(f) / 10) < 1e-12)
    end
  end)
end)

-- ---------------------------------------------------------------- 1. all methods agree

describe("G'(eta) for GD on a quadratic, eigenvalues in [1, 10], d = 20", function()
  for _, T in ipairs{10, 100, 1000} do
    it(("stable, exact and fd match the closed form at T = %d on the grid"):format(T), function()
      for _, eta in ipairs(GRID) do
        local G, dG = closed_log(eta, T)
        for _, method in ipairs{"stable", "exact", "fd"} do
          local r = vg(eta, T, "log", method)
          local where = ("T=%d eta=%g %s: grad %.17g, closed form %.17g (status %s)"):format(
            T, eta, method, r.grad.lr, dG, r.status)
          assert.are.equal("ok", r.status, where)
          assert.is_true(rel(r.grad.lr, dG) < TOL, where)
          assert.is_true(rel(r.value, G) < TOL, where)
        end
      end
    end)

    it(("reverse and forward match wherever they say ok at T = %d%s"):format(
      T, T <= 100 and ", which is everywhere" or ""), function()
      local n_ok = 0
      for _, eta in ipairs(GRID) do
        local G, dG = closed_log(eta, T)
        for _, method in ipairs{"reverse", "forward"} do
          local r = vg(eta, T, "log", method)
          local where = ("T=%d eta=%g %s: grad %.17g, closed form %.17g (status %s)"):format(
            T, eta, method, r.grad.lr, dG, r.status)
          if T <= 100 then assert.are.equal("ok", r.status, where) end
          if r.status == "ok" then
            n_ok = n_ok + 1
            assert.is_true(rel(r.grad.lr, dG) < TOL, where)
            assert.is_true(rel(r.value, G) < TOL, where)
          else
            assert.is_true(r.status == "overflow" or r.status == "underflow" or r.status == "nan", where)
          end
        end
      end
      assert.is_true(n_ok > 0)
    end)
  end
end)

-- ---------------------------------------------------------------- 2. long unrolls

describe("T = 100000", function()
  for _, eta in ipairs{0.01, 0.15, 0.3} do
    it(("stable matches the closed form and reverse reports failure at eta = %g"):format(eta), function()
      local T = 100000
      local G, dG = closed_log(eta, T)
      local s = vg(eta, T, "log", "stable")
      assert.are.equal("ok", s.status)
      assert.is_true(rel(s.grad.lr, dG) < TOL, ("stable %.17g, closed form %.17g"):format(s.grad.lr, dG))
      assert.is_true(rel(s.value, G) < TOL)
      local r = vg(eta, T, "log", "reverse")
      assert.are_not.equal("ok", r.status)
      assert.is_true(r.status == "overflow" or r.status == "underflow" or r.status == "nan", r.status)
      -- which way it fails follows the closed form: f(w_t) shrinks for rho < 1, grows for rho > 1
      assert.are.equal(rho(eta) < 1 and "underflow" or "overflow", r.status)
      assert.is_true(r.fail_step >= 1 and r.fail_step < T)
    end)
  end
end)

-- ---------------------------------------------------------------- 3. explosion and vanishing

describe("naive F'(eta) against log G'(eta)", function()
  local Ts = {10, 100, 1000}

  it("log|F'| matches the closed form (exact and stable), also where F' overflows", function()
    for _, eta in ipairs{0.05, 0.15, 0.25, 0.4} do
      for _, T in ipairs(Ts) do
        local want = closed_naive_log_abs_grad(eta, T)
        for _, method in ipairs{"exact", "stable"} do
          local r = vg(eta, T, "naive", method)
          assert.is_true(rel(r.log_abs_grad.lr, want) < TOL,
            ("eta=%g T=%d %s: %.17g vs %.17g"):format(eta, T, method, r.log_abs_grad.lr, want))
          if r.status == "ok" then assert.is_true(rel(math.log(math.abs(r.grad.lr)), want) < TOL) end
        end
      end
    end
    -- beyond 2/lambda_max at T = 1000, F' is past the double range; only its log is left
    local r = vg(0.4, 1000, "naive", "exact")
    assert.are.equal("overflow", r.status)
    assert.are.equal(math.huge, math.abs(r.grad.lr))
  end)

  it("|F'| shrinks exponentially below 2/lambda_max and grows above, at slope 2 log rho", function()
    for _, eta in ipairs(GRID) do
      if eta ~= 0.19 then -- 1 - eta lambda_10 = 0 there: that direction is gone, nothing else changes
        local lg = {}
        for k, T in ipairs(Ts) do
          local r = vg(eta, T, "naive", "exact")
          local rs = vg(eta, T, "naive", "stable")
          assert.is_true(rel(rs.log_abs_grad.lr, r.log_abs_grad.lr) < TOL)
          lg[k] = r.log_abs_grad.lr
        end
        local expected = 2 * math.log(rho(eta))
        local slope = (lg[3] - lg[2]) / (Ts[3] - Ts[2])
        local where = ("eta=%g: log|F'| = %.6g, %.6g, %.6g; slope %.6g, 2 log rho %.6g"):format(
          eta, lg[1], lg[2], lg[3], slope, expected)
        if eta < 2 / LMAX then
          assert.is_true(lg[1] > lg[2] and lg[2] > lg[3], where)
        else
          assert.is_true(lg[1] < lg[2] and lg[2] < lg[3], where)
        end
        -- F' = -T sum ..., so log|F'| ~ 2T log rho + log T: the log T part is (log 10)/900
        assert.is_true(math.abs(slope - expected) < 0.01, where)
      end
    end
  end)

  it("|G'| stays bounded across the grid and T (stable and closed form)", function()
    for _, T in ipairs(Ts) do
      for _, eta in ipairs(GRID) do
        local _, dG = closed_log(eta, T)
        local r = vg(eta, T, "log", "stable")
        assert.is_true(math.abs(dG) < 50, ("closed form T=%d eta=%g: %g"):format(T, eta, dG))
        assert.is_true(math.abs(r.grad.lr) < 50, ("stable T=%d eta=%g: %g"):format(T, eta, r.grad.lr))
      end
    end
    -- where F' is astronomically large, G' is a moderate number
    local rn, rl = vg(0.4, 1000, "naive", "stable"), vg(0.4, 1000, "log", "stable")
    assert.is_true(rn.log_abs_grad.lr > 2000)
    assert.are.equal("ok", rl.status)
    assert.is_true(math.abs(rl.grad.lr) < 50)
  end)
end)

-- ---------------------------------------------------------------- 4. meta-gradient descent on G

describe("meta-gradient descent on G with step 1/sqrt(k)", function()
  local T = 40

  -- The minimizer of G from the closed form: a grid over (0, 4/lambda_max] refined by
  -- golden-section search.
  local best
  local function minimizer()
    if not best then best = oracle.grid_optimum(SP, T, 2000) end
    return best
  end

  for _, eta0 in ipairs{0.01, 0.3} do
    it(("ends within 1%% of the grid minimizer from eta0 = %g"):format(eta0), function()
      local target = minimizer()
      local res = ms.meta.train{objective = OBJ, optimizer = ms.optim.gd{lr = eta0}, w0 = W0T, steps = T,
                                meta = "log", method = "stable", iterations = 300, meta_lr = 0.003,
                                schedule = "inv_sqrt", progress = false}
      for _, h in ipairs(res.history) do assert.are.equal("ok", h.status) end
      local eta = res.theta.lr
      assert.is_true(rel(eta, target) < 0.01, ("learned %.8g, grid minimizer %.8g"):format(eta, target))
    end)
  end
end)

-- ---------------------------------------------------------------- 5. least squares

describe("least squares: train-by-train vs train-by-validation", function()
  -- Few noisy samples: d = 20, 10 training + 10 validation samples per task, sigma = 2.
  -- Both meta-objectives train on the same tasks (train-by-train never looks at the
  -- validation half). The step size is log-parametrized (the paper searches a log grid);
  -- runs are frozen at |w| = 40 sigma as in the paper.
  local T, SIGMA = 40, 2
  local function sampler(seed)
    return ms.tasks.least_squares{d = 20, n_train = 10, n_valid = 10, n_test = 200, sigma = SIGMA, seed = seed}
  end
  local function learn(meta)
    local res = ms.meta.train{sample = sampler(1), batch = 8, optimizer = ms.optim.gd{lr = 0.01, log_lr = true},
                              steps = T, meta = meta, method = "reverse", iterations = 100, meta_lr = 1.5,
                              schedule = "inv_sqrt", freeze_norm = 40 * SIGMA, progress = false}
    return math.exp(res.theta.log_lr), res
  end
  -- mean test loss of GD with step eta on 20 fresh tasks
  local function test_loss(eta)
    local fresh, s = sampler(99), 0
    for _ = 1, 20 do
      local task = fresh()
      local traj = ms.meta.unroll{task = task, optimizer = ms.optim.gd{lr = eta}, steps = T, freeze_norm = 40 * SIGMA}
      assert.are.equal("ok", traj.status)
      s = s + task.test_objective:value(traj.w_T):item()
    end
    return s / 20
  end

  it("both run end to end; train-by-validation's test loss is lower", function()
    local eta_tt = learn("train")
    local eta_tv = learn("valid")
    local loss_tt, loss_tv = test_loss(eta_tt), test_loss(eta_tv)
    local summary = ("train-by-train eta %.4g test %.4g; train-by-validation eta %.4g test %.4g"):format(
      eta_tt, loss_tt, eta_tv, loss_tv)
    for _, x in ipairs{eta_tt, eta_tv, loss_tt, loss_tv} do
      assert.is_true(x == x and math.abs(x) < math.huge, summary)
    end
    assert.is_true(eta_tt > 0 and eta_tv > 0, summary)
    assert.is_true(loss_tv < loss_tt, summary)
    -- the mechanism: train-by-train takes the large step that fits the noise
    assert.is_true(eta_tt > eta_tv, summary)
  end)
end)

-- ---------------------------------------------------------------- 6. a meta-objective in Lua

describe("a user-defined meta-objective", function()
  -- mean of log f(w_t) over the last half of the unroll
  local function tail_log(traj)
    local s, n = 0, 0
    for t = traj.T // 2 + 1, traj.T do
      s = s + ms.log(traj.losses[t])
      n = n + 1
    end
    return s / n
  end

  local function spec(eta, method)
    return {objective = OBJ, optimizer = ms.optim.gd{lr = eta}, w0 = W0T, steps = 30, meta = tail_log,
            method = method}
  end

  it("reverse mode matches fd", function()
    for _, eta in ipairs{0.05, 0.15, 0.25} do
      local r = ms.meta.value_and_grad(spec(eta, "reverse"))
      local f = ms.meta.value_and_grad(spec(eta, "fd"))
      assert.are.equal("ok", r.status)
      assert.are.equal("ok", f.status)
      assert.is_true(rel(r.grad.lr, f.grad.lr) < TOL, ("eta=%g: reverse %.17g, fd %.17g"):format(
        eta, r.grad.lr, f.grad.lr))
      assert.is_true(rel(r.value, f.value) < 1e-14)
    end
  end)

  it("meta-trains with reverse mode", function()
    local s = spec(0.05, "reverse")
    s.iterations, s.meta_lr, s.progress = 30, 1e-4, false
    local res = ms.meta.train(s)
    local h = res.history
    for _, rec in ipairs(h) do assert.are.equal("ok", rec.status) end
    assert.is_true(h[#h].value < h[1].value)
    assert.is_true(res.theta.lr > 0.05)
  end)
end)

-- ---------------------------------------------------------------- 7. bad input

describe("bad input", function()
  local function run(fields)
    local s = {objective = OBJ, optimizer = ms.optim.gd{lr = 0.1}, w0 = W0T, steps = 5}
    for k, v in pairs(fields) do s[k] = v end
    return function() ms.meta.value_and_grad(s) end
  end

  it("negative or non-finite step sizes", function()
    assert.has_error(function() ms.optim.gd{lr = -1} end, "optim.gd: option 'lr' must be >= 0, got -1")
    assert.has_error(function() ms.optim.gd{lr = 0 / 0} end, "optim.gd: option 'lr' must be finite, got nan")
    assert.has_error(function() ms.optim.gd{lr = math.huge} end, "optim.gd: option 'lr' must be finite, got inf")
    assert.has_error(run{theta = {lr = -1}}, "meta: meta-parameter 'lr' must be >= 0, got -1")
    assert.has_error(run{theta = {lr = 0 / 0}}, "meta: meta-parameter 'lr' must be finite, got nan")
    assert.has_error(run{theta = {lr = -math.huge}}, "meta: meta-parameter 'lr' must be finite, got -inf")
  end)

  it("errors point at the caller, not at the library", function()
    -- has_error strips the position, so look at it directly
    local function where(f)
      local ok, err = pcall(f)
      assert.is_false(ok)
      return err:match("^(.-):%d+: ")
    end
    local here = debug.getinfo(1, "S").short_src
    assert.are.equal(here, where(function() ms.optim.gd{lr = -1} end))
    assert.are.equal(here, where(function() ms.meta.value_and_grad{objective = OBJ, optimizer = ms.optim.gd{lr = 0.1},
                                                                   w0 = ms.zeros(3), steps = 5} end))
    assert.are.equal(here, where(function() ms.meta.value_and_grad{objective = OBJ, optimizer = ms.optim.gd{lr = 0.1},
                                                                   steps = 5, method = "magic"} end))
  end)

  it("steps", function()
    assert.has_error(run{steps = 0}, "meta: 'steps' must be >= 1, got 0")
    assert.has_error(run{steps = -3}, "meta: 'steps' must be >= 1, got -3")
    assert.has_error(run{steps = 2.5}, "meta: 'steps' must be an integer, got 2.5")
    assert.has_error(run{steps = math.huge}, "meta: 'steps' must be an integer, got inf")
    assert.has_error(run{steps = "10"}, "meta: 'steps' must be an integer, got 10")
    assert.has_error(run{steps = false}, "meta: 'steps' must be an integer, got false")
  end)

  it("dimensions of objective and w0", function()
    assert.has_error(run{w0 = ms.zeros(3)}, "meta: 'w0' has shape [3] but the objective has dimension 20")
    assert.has_error(run{w0 = ms.zeros(20, 1)}, "meta: 'w0' has shape [20,1] but the objective has dimension 20")
    assert.has_error(run{w0 = ms.zeros(3), method = "stable"},
      "meta: 'w0' has shape [3] but the objective has dimension 20")
    assert.has_error(run{w0 = {1, 2}}, "meta: 'w0' must be a tensor, got table")
  end)

  it("a Lua objective that raises: the message surfaces, and the tapes are unwound", function()
    local calls = 0
    local bad = ms.objective.from_function(function(w) -- fails a few steps into the unroll
      calls = calls + 1
      if calls > 3 then error("user objective failed", 0) end
      return ms.dot(w, w)
    end, {dim = 3, name = "mine"})
    for _, method in ipairs{"reverse", "forward", "fd"} do
      calls = 0
      assert.has_error(function()
        ms.meta.value_and_grad{objective = bad, optimizer = ms.optim.gd{lr = 0.1}, w0 = ms.ones(3), steps = 3,
                               meta = "naive", method = method}
      end, "user objective failed")
    end
    -- and the next run is clean
    local r = vg(0.1, 10, "log", "reverse")
    assert.are.equal("ok", r.status)
    assert.is_true(rel(r.grad.lr, select(2, closed_log(0.1, 10))) < TOL)
  end)

  it("a Lua objective returning a non-scalar", function()
    local vec = ms.objective.from_function(function(w) return w * 2 end, {dim = 3, name = "mine"})
    local str = ms.objective.from_function(function() return "x" end, {dim = 3, name = "mine"})
    for _, method in ipairs{"reverse", "forward", "fd"} do
      assert.has_error(function()
        ms.meta.value_and_grad{objective = vec, optimizer = ms.optim.gd{lr = 0.1}, w0 = ms.ones(3), steps = 3,
                               method = method}
      end, "mine: the objective function must return a number or a one-element tensor, got shape [3]")
    end
    assert.has_error(function()
      ms.meta.value_and_grad{objective = str, optimizer = ms.optim.gd{lr = 0.1}, w0 = ms.ones(3), steps = 3}
    end, "mine: the objective function must return a number or a one-element tensor, got string")
  end)

  it("unknown method and meta-objective", function()
    assert.has_error(run{method = "magic"},
      "meta: unknown method 'magic' (expected reverse, forward, exact, stable or fd)")
    assert.has_error(run{meta = "best"},
      "meta: unknown meta-objective 'best' (expected naive, log, sum, logsum, train, valid or a function)")
    assert.has_error(run{meta = 3}, "meta: 'meta' must be a name or a function of the trajectory, got number")
    assert.has_error(run{meta = function() return ms.ones(2) end},
      "meta: the meta-objective must return a number or a one-element tensor, got shape [2]")
    assert.has_error(run{meta = function() error("meta failed", 0) end}, "meta failed")
  end)

  it("methods outside their domain", function()
    assert.has_error(run{optimizer = ms.optim.momentum{lr = 0.1}, method = "exact"},
      "meta: method 'exact' handles the optimizers gd, got momentum")
    assert.has_error(run{optimizer = ms.optim.adam{lr = 0.1}, method = "stable"},
      "meta: method 'stable' handles the optimizers gd, momentum, nesterov, got adam")
    assert.has_error(run{meta = "sum", method = "exact"},
      "meta: method 'exact' handles the meta-objectives naive, log, got sum")
    assert.has_error(run{meta = function(traj) return traj.losses[1] end, method = "exact"},
      "meta: method 'exact' handles the meta-objectives naive, log, got a function")
    local ls = ms.objective.least_squares(ms.eye(20), ms.zeros(20))
    local lg = ms.objective.logistic(ms.eye(20), ms.zeros(20))
    assert.has_error(run{objective = lg, method = "stable"},
      "meta: method 'stable' needs a quadratic or least-squares objective, got logistic")
    assert.has_error(run{objective = ls, method = "exact"},
      "meta: method 'exact' needs a quadratic objective, got least_squares")
  end)
end)
