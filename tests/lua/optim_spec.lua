-- Optimizers (lua/metastep/optim.lua) and the parts of meta.lua that meta_spec.lua does not
-- cover: every optimizer's step against a plain-Lua implementation written here, meta-
-- gradients with respect to several meta-parameters, log-parametrized step sizes,
-- truncated back-propagation, objectives other than quadratics inside the unroll, Lua-
-- defined optimizers, meta.train's options and the errors at the boundary.
-- Golden values are plain Lua arithmetic on nested tables: trajectories by iterating the
-- update rule, derivatives by forward-mode recursions written out by hand (the tangent of
-- every iterate, carried step by step). Central differences (method "fd") only corroborate.
local ms = require "metastep"
local h = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "tests/lua") .. "/helpers.lua")
local rel, assert_rel, assert_vec, err_of = h.rel, h.assert_rel, h.assert_close, h.err_of

-- ---------------------------------------------------------------- plain Lua

local matvec, dot = h.matvec, h.dot

-- a x + b y, element-wise (b defaults to 1)
local function lin(a, x, b, y)
  local r = {}
  for i = 1, #x do r[i] = a * x[i] + (b or 1) * y[i] end
  return r
end

local function copy(x)
  local r = {}
  for i = 1, #x do r[i] = x[i] end
  return r
end

local function zeros(d)
  local r = {}
  for i = 1, d do r[i] = 0 end
  return r
end

local function sigm(z) return 1 / (1 + math.exp(-z)) end

-- ---------------------------------------------------------------- the problems

-- H = B^T B + I/2 from fixed numbers (symmetric positive definite, eigenvalues in about [0.5, 9]).
local B = {{1, 2, 0, 0}, {0, 1, -1, 0}, {1, 0, 1, 1}, {0, 0, 1, -1.5}}
local D = 4
local H = {}
for i = 1, D do
  H[i] = {}
  for j = 1, D do
    local s = i == j and 0.5 or 0
    for k = 1, D do s = s + B[k][i] * B[k][j] end
    H[i][j] = s
  end
end
local W0 = {1, -2, 0.5, 1.5}
local OBJ = ms.objective.quadratic(ms.tensor(H))
local W0T = ms.tensor(W0)

local function fq(w) return 0.5 * dot(w, matvec(H, w)) end

-- Least squares and logistic data: fixed Gaussian numbers (their values are irrelevant,
-- they are read back as plain tables).
local NS, DS = 7, 3
local XL = ms.randn({NS, DS}, {seed = 21}):totable()
local YL = ms.randn({NS}, {seed = 22}):totable()
local YB = {1, 0, 0, 1, 1, 0, 1}
local WS0 = {0.3, -0.2, 0.1}
local LS = ms.objective.least_squares(ms.tensor(XL), ms.tensor(YL))
local LOGI = ms.objective.logistic(ms.tensor(XL), ms.tensor(YB), 0.1)

-- least squares on rows `rows` (all by default): value, gradient, Hessian times v
local function ls_parts(X, y, w, v, rows)
  if not rows then
    rows = {}
    for i = 1, #X do rows[i] = i end
  end
  local n, f, g, hv = #rows, 0, zeros(#w), zeros(#w)
  for _, i in ipairs(rows) do
    local r = dot(X[i], w) - y[i]
    local xv = v and dot(X[i], v) or 0
    f = f + r * r / (2 * n)
    for j = 1, #w do
      g[j] = g[j] + X[i][j] * r / n
      hv[j] = hv[j] + X[i][j] * xv / n
    end
  end
  return f, g, hv
end

-- logistic: mean log(1 + exp(-s z)) + l2/2 |w|^2, z = x.w, s = 2y - 1
local function logi_parts(X, y, l2, w, v)
  local n, f, g, hv = #X, 0, zeros(#w), zeros(#w)
  for i = 1, n do
    local z = dot(X[i], w)
    local s = 2 * y[i] - 1
    local p = sigm(z)
    f = f + math.log(1 + math.exp(-s * z)) / n
    local c = p * (1 - p) * dot(X[i], v or zeros(#w))
    for j = 1, #w do
      g[j] = g[j] + X[i][j] * (p - y[i]) / n
      hv[j] = hv[j] + X[i][j] * c / n
    end
  end
  for j = 1, #w do
    f = f + 0.5 * l2 * w[j] ^ 2
    g[j] = g[j] + l2 * w[j]
    hv[j] = hv[j] + l2 * (v and v[j] or 0)
  end
  return f, g, hv
end

-- A function given to from_function, and its derivatives by hand:
-- f(w) = sum_i log(1 + w_i^2) + 1/2 (w_1 w_2 - 1)^2
local function fun_ms(w)
  -- slices, not w[1]: indexing a 1-d tensor gives a plain number, which carries no derivative
  return ms.sum(ms.log(ms.square(w) + 1)) + 0.5 * ms.square(ms.sum(w:slice(1, 1, 1) * w:slice(1, 2, 2)) - 1)
end
local function fun_parts(w, v)
  local f, g, hv = 0, {}, {}
  for i = 1, #w do
    f = f + math.log(1 + w[i] ^ 2)
    g[i] = 2 * w[i] / (1 + w[i] ^ 2)
    hv[i] = 2 * (1 - w[i] ^ 2) / (1 + w[i] ^ 2) ^ 2 * (v and v[i] or 0)
  end
  local q = w[1] * w[2] - 1
  f = f + 0.5 * q * q
  g[1], g[2] = g[1] + q * w[2], g[2] + q * w[1]
  if v then
    -- Hessian of the second term: [[w2^2, 2 w1 w2 - 1], [2 w1 w2 - 1, w1^2]]
    local c = 2 * w[1] * w[2] - 1
    hv[1] = hv[1] + w[2] ^ 2 * v[1] + c * v[2]
    hv[2] = hv[2] + c * v[1] + w[1] ^ 2 * v[2]
  end
  return f, g, hv
end
local FUN = ms.objective.from_function(fun_ms, {dim = 3, name = "fun"})

-- GD on an objective given by parts(w, v) -> f, g, Hv, from w0 with step lr, T steps:
-- the loss at w_T and its derivative in lr, by carrying dw_t = d w_t / d lr forward.
-- The first T - K steps are held fixed when K is given (dw_{T-K} = 0).
local function gd_forward(parts, w0, lr, T, K)
  local w, dw = copy(w0), zeros(#w0)
  for t = 1, T do
    if K and t == T - K + 1 then dw = zeros(#w0) end
    local _, g, hdw = parts(w, dw)
    -- w' = w - lr g(w);  dw' = dw - g - lr H dw
    w, dw = lin(-lr, g, 1, w), lin(1, dw, -1, lin(lr, hdw, 1, g))
  end
  local f, g = parts(w)
  return f, dot(g, dw)
end

local function q_parts(w, v) return fq(w), matvec(H, w), v and matvec(H, v) or nil end

local function spec(fields)
  local s = {objective = OBJ, w0 = W0T, steps = 10, meta = "log"}
  for k, v in pairs(fields) do s[k] = v end
  return s
end

-- meta.value_and_grad(make(method)) by each method must give status "ok", the value to 1e-13
-- and d/dlr to 1e-12 (1e-7 by central differences); what names the derivative in messages.
local function check_lr_methods(make, value, dlr, what)
  for _, method in ipairs{"reverse", "forward", "fd"} do
    local r = ms.meta.value_and_grad(make(method))
    assert.are.equal("ok", r.status)
    assert_rel(r.value, value, 1e-13, method .. " value")
    assert_rel(r.grad.lr, dlr, method == "fd" and 1e-7 or 1e-12, method .. " " .. what)
  end
end

-- The iterates of an unroll, as plain tables w[0..T].
local function iterates(s)
  s.keep_iterates = true
  local traj = ms.meta.unroll(s)
  assert.are.equal("ok", traj.status)
  local w = {}
  for t = 0, traj.T do w[t] = traj.w[t]:totable() end
  return w, traj
end

-- ---------------------------------------------------------------- 1. steps

describe("each optimizer's step against plain Lua", function()
  local T = 6

  it("gd: w' = w - lr g, and the losses along the way", function()
    local w, traj = iterates(spec{optimizer = ms.optim.gd{lr = 0.07}, steps = T})
    local x = copy(W0)
    assert_rel(traj.loss0:item(), fq(x), 1e-14, "f(w_0)")
    for t = 1, T do
      x = lin(-0.07, matvec(H, x), 1, x)
      assert_vec(w[t], x, 1e-14, "gd w_" .. t)
      assert_rel(traj.losses[t]:item(), fq(x), 1e-13, "gd f(w_" .. t .. ")")
    end
  end)

  it("momentum (heavy ball): m' = beta m + g, w' = w - lr m'", function()
    local w = iterates(spec{optimizer = ms.optim.momentum{lr = 0.05, beta = 0.8}, steps = T})
    local x, m = copy(W0), zeros(D)
    for t = 1, T do
      m = lin(0.8, m, 1, matvec(H, x))
      x = lin(-0.05, m, 1, x)
      assert_vec(w[t], x, 1e-14, "momentum w_" .. t)
    end
  end)

  it("momentum's default beta is 0.9", function()
    assert.are.equal(0.9, ms.optim.momentum{lr = 0.1}.theta.beta)
  end)

  for _, case in ipairs{{}, {beta1 = 0.5, beta2 = 0.7, eps = 0.3}} do
    local b1, b2, eps = case.beta1 or 0.9, case.beta2 or 0.999, case.eps or 1e-8
    it(("adam with bias correction, beta1 = %g, beta2 = %g, eps = %g"):format(b1, b2, eps), function()
      local opts = {lr = 0.1}
      for k, v in pairs(case) do opts[k] = v end
      local w = iterates(spec{optimizer = ms.optim.adam(opts), steps = T})
      local x, m, v = copy(W0), zeros(D), zeros(D)
      for t = 1, T do
        local g = matvec(H, x)
        for i = 1, D do
          m[i] = b1 * m[i] + (1 - b1) * g[i]
          v[i] = b2 * v[i] + (1 - b2) * g[i] ^ 2
          local mh, vh = m[i] / (1 - b1 ^ t), v[i] / (1 - b2 ^ t)
          x[i] = x[i] - 0.1 * mh / (math.sqrt(vh) + eps)
        end
        assert_vec(w[t], x, 1e-13, "adam w_" .. t)
      end
    end)
  end

  it("adam's first step moves every coordinate by lr against the sign of g (bias correction)", function()
    local w = iterates(spec{optimizer = ms.optim.adam{lr = 0.01}, steps = 1})
    local g = matvec(H, W0)
    for i = 1, D do
      -- mhat = g, vhat = g^2: the step is lr g / (|g| + eps)
      assert_rel(W0[i] - w[1][i], 0.01 * g[i] / (math.abs(g[i]) + 1e-8), 1e-13, "coordinate " .. i)
    end
  end)

  it("log_lr: theta holds log(lr) and the steps use exp(log_lr)", function()
    local opt = ms.optim.gd{lr = 0.07, log_lr = true}
    assert.are.same({log_lr = math.log(0.07)}, opt.theta)
    local w = iterates(spec{optimizer = opt, steps = T})
    local x = copy(W0)
    for t = 1, T do
      x = lin(-0.07, matvec(H, x), 1, x)
      assert_vec(w[t], x, 1e-14, "w_" .. t)
    end
    -- a theta override in log space
    w = iterates(spec{optimizer = opt, theta = {log_lr = math.log(0.03)}, steps = T})
    x = copy(W0)
    for t = 1, T do
      x = lin(-0.03, matvec(H, x), 1, x)
      assert_vec(w[t], x, 1e-14, "override w_" .. t)
    end
    -- momentum keeps beta as it is
    local mo = ms.optim.momentum{lr = 0.05, beta = 0.5, log_lr = true}
    assert.are.same({log_lr = math.log(0.05), beta = 0.5}, mo.theta)
  end)

  it("a schedule table is copied: later edits of the caller's table do not change the optimizer", function()
    local factors = {1, 1}
    local opt = ms.optim.gd{lr = 0.1, schedule = factors}
    factors[1], factors[2] = 100, 100
    local w = iterates(spec{optimizer = opt, steps = 2})
    local x = copy(W0)
    for t = 1, 2 do
      x = lin(-0.1, matvec(H, x), 1, x)
      assert_vec(w[t], x, 1e-14, "w_" .. t)
    end
  end)

  it("schedules: a function of the step and a table of factors (the last one repeats)", function()
    local cases = {
      {ms.optim.gd{lr = 0.1, schedule = function(t) return 1 / t end}, function(t) return 1 / t end},
      {ms.optim.gd{lr = 0.1, schedule = {1, 0.5, 0.25}}, function(t) return ({1, 0.5, 0.25})[math.min(t, 3)] end},
      {ms.optim.gd{lr = 0.1, log_lr = true, schedule = {0.5, 2}}, function(t) return t == 1 and 0.5 or 2 end},
    }
    for k, case in ipairs(cases) do
      local w = iterates(spec{optimizer = case[1], steps = T})
      local x = copy(W0)
      for t = 1, T do
        x = lin(-0.1 * case[2](t), matvec(H, x), 1, x)
        assert_vec(w[t], x, 1e-14, ("case %d w_%d"):format(k, t))
      end
    end
    -- momentum and adam take their step size through the same schedule
    local w = iterates(spec{optimizer = ms.optim.momentum{lr = 0.05, beta = 0.5, schedule = {2, 1}}, steps = T})
    local x, m = copy(W0), zeros(D)
    for t = 1, T do
      m = lin(0.5, m, 1, matvec(H, x))
      x = lin(-0.05 * (t == 1 and 2 or 1), m, 1, x)
      assert_vec(w[t], x, 1e-14, "momentum w_" .. t)
    end
    w = iterates(spec{optimizer = ms.optim.adam{lr = 0.1, schedule = function(t) return 0.5 ^ t end}, steps = 3})
    local v
    x, m, v = copy(W0), zeros(D), zeros(D)
    for t = 1, 3 do
      local g = matvec(H, x)
      for i = 1, D do
        m[i] = 0.9 * m[i] + 0.1 * g[i]
        v[i] = 0.999 * v[i] + 0.001 * g[i] ^ 2
        x[i] = x[i] - 0.1 * 0.5 ^ t * (m[i] / (1 - 0.9 ^ t)) / (math.sqrt(v[i] / (1 - 0.999 ^ t)) + 1e-8)
      end
      assert_vec(w[t], x, 1e-13, "adam w_" .. t)
    end
  end)

  it("the meta-gradient through a schedule matches plain-Lua forward mode", function()
    -- w' = w - lr s_t H w;  dw' = dw - s_t H w - lr s_t H dw
    local sched = {1, 0.5, 0.25}
    local lr, T2 = 0.1, 8
    local x, dx = copy(W0), zeros(D)
    for t = 1, T2 do
      local s = sched[math.min(t, 3)]
      local hx, hdx = matvec(H, x), matvec(H, dx)
      x, dx = lin(-lr * s, hx, 1, x), lin(1, dx, -s, lin(lr, hdx, 1, hx))
    end
    local f, dF = fq(x), dot(matvec(H, x), dx)
    check_lr_methods(function(method)
      return spec{optimizer = ms.optim.gd{lr = lr, schedule = sched}, steps = T2, meta = "naive", method = method}
    end, f, dF, "d/dlr")
  end)
end)

-- ---------------------------------------------------------------- 2. sgd

describe("sgd", function()
  local X, Y = XL, YL
  local lr, batch = 0.1, 2

  -- The rows each step drew, found by matching the step against the least-squares gradient
  -- of every multiset of `batch` rows: exactly one multiset may match.
  local function decode(w)
    local draws = {}
    for t = 1, #w do
      local found = {}
      for i = 1, NS do
        for j = i, NS do
          local _, g = ls_parts(X, Y, w[t - 1], nil, {i, j})
          local want = lin(-lr, g, 1, w[t - 1])
          local ok = true
          for k = 1, DS do
            if math.abs(w[t][k] - want[k]) > 1e-13 * math.max(1, math.abs(want[k])) then ok = false end
          end
          if ok then found[#found + 1] = {i, j} end
        end
      end
      assert.are.equal(1, #found, ("step %d: %d multisets of rows match the step"):format(t, #found))
      draws[t] = found[1]
    end
    return draws
  end

  local function run(seed, T)
    return iterates{objective = LS, w0 = ms.tensor(WS0), steps = T or 12,
                    optimizer = ms.optim.sgd{lr = lr, batch = batch, seed = seed}}
  end

  it("each step is the least-squares gradient step on a drawn mini-batch", function()
    local draws = decode(run(5))
    local distinct = {}
    for _, d in ipairs(draws) do distinct[d[1] .. "," .. d[2]] = true end
    local n = 0
    for _ in pairs(distinct) do n = n + 1 end
    assert.is_true(n > 1, "every step drew the same rows")
  end)

  it("is deterministic given the seed, and the seed matters", function()
    local a, b, c = run(5), run(5), run(6)
    for t = 1, #a do assert.are.same(a[t], b[t]) end
    assert.are_not.same(decode(a), decode(c))
  end)

  it("batch = 1: every step is the gradient of a single row", function()
    local w = iterates{objective = LS, w0 = ms.tensor(WS0), steps = 5,
                       optimizer = ms.optim.sgd{lr = lr, batch = 1, seed = 2}}
    for t = 1, 5 do
      local hits = 0
      for i = 1, NS do
        local _, g = ls_parts(X, Y, w[t - 1], nil, {i})
        local want = lin(-lr, g, 1, w[t - 1])
        local ok = true
        for k = 1, DS do if math.abs(w[t][k] - want[k]) > 1e-13 then ok = false end end
        if ok then hits = hits + 1 end
      end
      assert.are.equal(1, hits, "step " .. t)
    end
  end)

  it("the meta-gradient is the derivative along the drawn batches (plain Lua, reverse, forward, fd)", function()
    local T = 10
    local draws = decode(run(5, T))
    local x, dx = copy(WS0), zeros(DS)
    for t = 1, T do
      local _, g, hdx = ls_parts(X, Y, x, dx, draws[t])
      x, dx = lin(-lr, g, 1, x), lin(1, dx, -1, lin(lr, hdx, 1, g))
    end
    local f, g = ls_parts(X, Y, x)
    local G, dG = math.log(f) / T, dot(g, dx) / (T * f)
    check_lr_methods(function(method)
      return {objective = LS, w0 = ms.tensor(WS0), steps = T, meta = "log", method = method,
              optimizer = ms.optim.sgd{lr = lr, batch = batch, seed = 5}}
    end, G, dG, "gradient")
  end)
end)

-- ---------------------------------------------------------------- 3. optimizers defined in Lua

describe("optim.new", function()
  -- sign-GD: w' = w - lr sign(g). With the signs s_t fixed, w_T = w_0 - lr sum_t s_t, so
  -- dF/dlr = -grad f(w_T) . sum_t s_t for F = f(w_T).
  local sign_gd = ms.optim.new{
    name = "sign_gd", theta = {lr = 0.043}, -- no g_i hits 0 exactly on the way
    step = function(theta, state, w, _, g) return w - ms.sign(g) * theta.lr, state end,
  }

  -- a decaying step with its own meta-parameters: s_0 = 1, s' = decay s, w' = w - lr s' g
  local decaying = ms.optim.new{
    name = "decaying", theta = {lr = 0.1, decay = 0.8},
    init = function() return {s = ms.tensor(1.0)} end,
    step = function(theta, state, w, _, g)
      local s = state.s * theta.decay
      return w - g * (s * theta.lr), {s = s}
    end,
  }

  it("has the given name, kind custom and its theta", function()
    assert.are.equal("sign_gd", sign_gd.name)
    assert.are.equal("custom", sign_gd.kind)
    assert.are.same({lr = 0.1, decay = 0.8}, decaying.theta)
    local bare = ms.optim.new{step = function(_, s, w) return w, s end}
    assert.are.equal("custom", bare.name)
    assert.are.same({}, bare.theta)
    assert.are.same({}, bare.init())
  end)

  it("sign-GD: trajectory and meta-gradient against plain Lua, reverse and forward against fd", function()
    local T = 7
    local w = iterates(spec{optimizer = sign_gd, steps = T})
    local x, ssum = copy(W0), zeros(D)
    for t = 1, T do
      local g = matvec(H, x)
      for i = 1, D do
        local s = g[i] > 0 and 1 or (g[i] < 0 and -1 or 0)
        ssum[i] = ssum[i] + s
        x[i] = x[i] - 0.043 * s
      end
      assert_vec(w[t], x, 1e-14, "w_" .. t)
    end
    local dF = -dot(matvec(H, x), ssum)
    check_lr_methods(function(method)
      return spec{optimizer = sign_gd, steps = T, meta = "naive", method = method}
    end, fq(x), dF, "d/dlr")
  end)

  it("a decaying step with two meta-parameters: plain-Lua forward mode, reverse, forward and fd agree", function()
    local T, lr, decay = 9, 0.1, 0.8
    -- w_t = w_{t-1} - lr decay^t H w_{t-1}; tangents in lr (a) and decay (b)
    local x, da, db = copy(W0), zeros(D), zeros(D)
    for t = 1, T do
      local c = lr * decay ^ t
      local hx = matvec(H, x)
      local nx = lin(-c, hx, 1, x)
      da = lin(1, da, -1, lin(c, matvec(H, da), decay ^ t, hx))
      db = lin(1, db, -1, lin(c, matvec(H, db), lr * t * decay ^ (t - 1), hx))
      x = nx
    end
    local f, g = fq(x), matvec(H, x)
    local G, gl, gd_ = math.log(f) / T, dot(g, da) / (T * f), dot(g, db) / (T * f)
    local w = iterates(spec{optimizer = decaying, steps = T})
    assert_vec(w[T], x, 1e-13, "w_T")
    for _, method in ipairs{"reverse", "forward", "fd"} do
      local r = ms.meta.value_and_grad(spec{optimizer = decaying, steps = T, meta = "log", method = method})
      assert.are.equal("ok", r.status)
      local tol = method == "fd" and 1e-7 or 1e-12
      assert_rel(r.value, G, 1e-13, method .. " value")
      assert_rel(r.grad.lr, gl, tol, method .. " d/dlr")
      assert_rel(r.grad.decay, gd_, tol, method .. " d/ddecay")
    end
    -- params picks a subset
    local r = ms.meta.value_and_grad(spec{optimizer = decaying, steps = T, method = "reverse", params = {"decay"}})
    local keys = {}
    for n in pairs(r.grad) do keys[#keys + 1] = n end
    assert.are.same({"decay"}, keys)
    assert_rel(r.grad.decay, gd_, 1e-12, "params = {decay}")
  end)

  it("an optimizer that reads f(w) and the step number", function()
    -- Polyak-like: w' = w - lr f(w) / (t |g|^2) g
    local polyak = ms.optim.new{
      theta = {lr = 0.5},
      step = function(theta, state, w, fw, g, t)
        return w - g * (fw / ms.dot(g, g) * theta.lr / t), state
      end,
    }
    local T = 5
    local w = iterates(spec{optimizer = polyak, steps = T})
    local x = copy(W0)
    for t = 1, T do
      local g = matvec(H, x)
      x = lin(-0.5 * fq(x) / (dot(g, g) * t), g, 1, x)
      assert_vec(w[t], x, 1e-13, "w_" .. t)
    end
    local r = ms.meta.value_and_grad(spec{optimizer = polyak, steps = T, method = "reverse"})
    local f = ms.meta.value_and_grad(spec{optimizer = polyak, steps = T, method = "fd"})
    assert_rel(r.grad.lr, f.grad.lr, 1e-7, "reverse vs fd")
  end)
end)

-- ---------------------------------------------------------------- 4. several meta-parameters

describe("momentum: meta-gradients in lr and beta at once", function()
  -- m_t = beta m_{t-1} + H w_{t-1}, w_t = w_{t-1} - lr m_t; tangents in lr (a) and beta (b).
  local function closed(lr, beta, T, meta)
    local x, m = copy(W0), zeros(D)
    local xa, ma, xb, mb = zeros(D), zeros(D), zeros(D), zeros(D)
    local sum, sa, sb = 0, 0, 0
    for _ = 1, T do
      local hx = matvec(H, x)
      local nm = lin(beta, m, 1, hx)
      local nma = lin(beta, ma, 1, matvec(H, xa))
      local nmb = lin(1, m, 1, lin(beta, mb, 1, matvec(H, xb)))
      x = lin(-lr, nm, 1, x)
      xa = lin(1, xa, -1, lin(lr, nma, 1, nm))
      xb = lin(-lr, nmb, 1, xb)
      m, ma, mb = nm, nma, nmb
      local g = matvec(H, x)
      sum, sa, sb = sum + fq(x), sa + dot(g, xa), sb + dot(g, xb)
    end
    local f, g = fq(x), matvec(H, x)
    if meta == "log" then return math.log(f) / T, dot(g, xa) / (T * f), dot(g, xb) / (T * f) end
    if meta == "naive" then return f, dot(g, xa), dot(g, xb) end
    return sum, sa, sb -- "sum"
  end

  for _, case in ipairs{{0.05, 0.5, 20, "log"}, {0.02, 0.9, 40, "log"}, {0.05, 0.3, 15, "naive"},
                        {0.08, 0.6, 12, "sum"}} do
    local lr, beta, T, meta = table.unpack(case)
    it(("lr = %g, beta = %g, T = %d, meta %s: reverse, forward, stable and fd"):format(lr, beta, T, meta), function()
      local V, dl, db = closed(lr, beta, T, meta)
      for _, method in ipairs{"reverse", "forward", "stable", "fd"} do
        local r = ms.meta.value_and_grad(spec{optimizer = ms.optim.momentum{lr = lr, beta = beta}, steps = T,
                                              meta = meta, method = method})
        local where = ("%s: lr %.17g beta %.17g; plain Lua %.17g %.17g"):format(method, r.grad.lr, r.grad.beta, dl, db)
        assert.are.equal("ok", r.status, where)
        assert_rel(r.value, V, 1e-12, where)
        local tol = method == "fd" and 1e-7 or 1e-10
        assert_rel(r.grad.lr, dl, tol, where)
        assert_rel(r.grad.beta, db, tol, where)
      end
    end)
  end

  it("log_lr: d/dlog_lr = lr d/dlr for every method (gd and momentum)", function()
    local lr, T = 0.06, 15
    local cases = {
      {"gd", function(log) return ms.optim.gd{lr = lr, log_lr = log} end, {"reverse", "forward", "exact", "stable", "fd"}},
      {"momentum", function(log) return ms.optim.momentum{lr = lr, beta = 0.7, log_lr = log} end,
       {"reverse", "forward", "stable", "fd"}},
    }
    for _, case in ipairs(cases) do
      local name, make, methods = table.unpack(case)
      for _, method in ipairs(methods) do
        local a = ms.meta.value_and_grad(spec{optimizer = make(false), steps = T, method = method})
        local b = ms.meta.value_and_grad(spec{optimizer = make(true), steps = T, method = method})
        local where = ("%s %s: d/dlr %.17g, d/dlog_lr %.17g"):format(name, method, a.grad.lr, b.grad.log_lr)
        assert.are.equal("ok", b.status, where)
        assert.is_nil(b.grad.lr, where)
        assert_rel(b.value, a.value, 1e-13, where)
        assert_rel(b.grad.log_lr, lr * a.grad.lr, method == "fd" and 1e-7 or 1e-12, where)
        if b.grad.beta then assert_rel(b.grad.beta, a.grad.beta, method == "fd" and 1e-7 or 1e-12, where) end
      end
    end
    -- and against the plain-Lua derivative
    local f, dF = gd_forward(q_parts, W0, lr, T)
    local r = ms.meta.value_and_grad(spec{optimizer = ms.optim.gd{lr = lr, log_lr = true}, steps = T, method = "reverse"})
    assert_rel(r.grad.log_lr, lr * dF / (T * f), 1e-12, "plain Lua")
  end)

  it("adam: reverse and forward agree with fd in lr", function()
    for _, T in ipairs{5, 20} do
      local g = {}
      for _, method in ipairs{"reverse", "forward", "fd"} do
        local r = ms.meta.value_and_grad(spec{optimizer = ms.optim.adam{lr = 0.05}, steps = T, method = method})
        assert.are.equal("ok", r.status)
        g[method] = r.grad.lr
      end
      assert_rel(g.reverse, g.fd, 1e-7, "reverse vs fd, T = " .. T)
      assert_rel(g.forward, g.reverse, 1e-12, "forward vs reverse, T = " .. T)
    end
  end)
end)

-- ---------------------------------------------------------------- 5. truncation

describe("truncated back-propagation (truncate = K)", function()
  local lr, T = 0.08, 12

  it("GD: the derivative with w_{T-K} held fixed (plain-Lua forward mode over the last K steps)", function()
    local _, full = gd_forward(q_parts, W0, lr, T)
    for _, K in ipairs{1, 2, 5, 11} do
      local f, dF = gd_forward(q_parts, W0, lr, T, K)
      for _, method in ipairs{"reverse", "forward"} do
        for _, meta in ipairs{"naive", "log"} do
          local r = ms.meta.value_and_grad(spec{optimizer = ms.optim.gd{lr = lr}, steps = T, truncate = K,
                                                method = method, meta = meta})
          local want = meta == "naive" and dF or dF / (T * f)
          local where = ("K=%d %s %s: %.17g vs %.17g"):format(K, method, meta, r.grad.lr, want)
          assert.are.equal("ok", r.status, where)
          assert_rel(r.grad.lr, want, 1e-12, where)
        end
      end
      assert.is_true(rel(dF, full) > 1e-3, "truncation changed nothing at K = " .. K)
    end
  end)

  it("K >= T is the full gradient", function()
    local f, dF = gd_forward(q_parts, W0, lr, T)
    for _, K in ipairs{T, T + 5} do
      local r = ms.meta.value_and_grad(spec{optimizer = ms.optim.gd{lr = lr}, steps = T, truncate = K,
                                            method = "reverse", meta = "naive"})
      assert_rel(r.grad.lr, dF, 1e-12, "K = " .. K)
      assert_rel(r.value, f, 1e-13, "value")
    end
  end)

  it("momentum: the optimizer state is held fixed too", function()
    local beta, K = 0.6, 3
    local x, m, xa, ma = copy(W0), zeros(D), zeros(D), zeros(D)
    for t = 1, T do
      if t == T - K + 1 then xa, ma = zeros(D), zeros(D) end
      local nm = lin(beta, m, 1, matvec(H, x))
      local nma = lin(beta, ma, 1, matvec(H, xa))
      x, xa = lin(-lr, nm, 1, x), lin(1, xa, -1, lin(lr, nma, 1, nm))
      m, ma = nm, nma
    end
    local dF = dot(matvec(H, x), xa)
    for _, method in ipairs{"reverse", "forward"} do
      local r = ms.meta.value_and_grad(spec{optimizer = ms.optim.momentum{lr = lr, beta = beta}, steps = T,
                                            truncate = K, method = method, meta = "naive", params = {"lr"}})
      assert_rel(r.grad.lr, dF, 1e-12, method)
    end
  end)

  it("least squares: the same recursion", function()
    local parts = function(w, v) return ls_parts(XL, YL, w, v) end
    local f, dF = gd_forward(parts, WS0, 0.3, 10, 4)
    local r = ms.meta.value_and_grad{objective = LS, w0 = ms.tensor(WS0), optimizer = ms.optim.gd{lr = 0.3},
                                     steps = 10, truncate = 4, meta = "naive", method = "reverse"}
    assert_rel(r.value, f, 1e-13, "value")
    assert_rel(r.grad.lr, dF, 1e-12, "gradient")
  end)

  it("a custom optimizer reading f(w) sees no derivative through the held steps", function()
    -- w' = w - lr f(w) g: the fixed part ends at w_{T-K}, f(w_{T-K}) included
    local fstep = ms.optim.new{theta = {lr = 0.02},
      step = function(theta, state, w, fw, g) return w - g * (fw * theta.lr), state end}
    local K, T2, c = 2, 6, 0.02
    local x, dx = copy(W0), zeros(D)
    for t = 1, T2 do
      if t == T2 - K + 1 then dx = zeros(D) end
      local f, g, hdx = fq(x), matvec(H, x), matvec(H, dx)
      local df = dot(g, dx)
      -- w' = w - c f g;  dw' = dw - f g - c (df g + f H dw)
      x, dx = lin(-c * f, g, 1, x), lin(1, dx, -1, lin(f + c * df, g, c * f, hdx))
    end
    local dF = dot(matvec(H, x), dx)
    local r = ms.meta.value_and_grad(spec{optimizer = fstep, steps = T2, truncate = K, meta = "naive",
                                          method = "reverse"})
    assert_rel(r.grad.lr, dF, 1e-12, "reverse")
  end)
end)

-- ---------------------------------------------------------------- 6. objectives in the unroll

describe("objectives other than quadratics inside the unroll", function()
  local cases = {
    {"least squares", LS, WS0, 0.3, function(w, v) return ls_parts(XL, YL, w, v) end},
    {"logistic", LOGI, WS0, 0.5, function(w, v) return logi_parts(XL, YB, 0.1, w, v) end},
    {"from_function", FUN, {0.4, 1.3, -0.7}, 0.2, fun_parts},
  }
  for _, case in ipairs(cases) do
    local name, obj, w0, lr, parts = table.unpack(case)
    it(name .. ": trajectory and meta-gradient against plain Lua; reverse, forward and fd agree", function()
      local T = 15
      local w = iterates{objective = obj, w0 = ms.tensor(w0), optimizer = ms.optim.gd{lr = lr}, steps = T}
      local x = copy(w0)
      for t = 1, T do
        local _, g = parts(x)
        x = lin(-lr, g, 1, x)
        assert_vec(w[t], x, 1e-13, "w_" .. t)
      end
      local f, dF = gd_forward(parts, w0, lr, T)
      for _, meta in ipairs{"naive", "log"} do
        local V = meta == "naive" and f or math.log(f) / T
        local G = meta == "naive" and dF or dF / (T * f)
        for _, method in ipairs{"reverse", "forward", "fd"} do
          local r = ms.meta.value_and_grad{objective = obj, w0 = ms.tensor(w0), optimizer = ms.optim.gd{lr = lr},
                                           steps = T, meta = meta, method = method}
          local where = ("%s %s: %.17g vs %.17g"):format(meta, method, r.grad.lr, G)
          assert.are.equal("ok", r.status, where)
          assert_rel(r.value, V, 1e-12, where)
          assert_rel(r.grad.lr, G, method == "fd" and 1e-7 or 1e-11, where)
        end
      end
    end)
  end

  it("momentum on logistic: lr and beta by reverse match fd", function()
    local s = {objective = LOGI, w0 = ms.tensor(WS0), optimizer = ms.optim.momentum{lr = 0.3, beta = 0.7}, steps = 12}
    s.method = "reverse"
    local r = ms.meta.value_and_grad(s)
    s.method = "fd"
    local f = ms.meta.value_and_grad(s)
    assert_rel(r.grad.lr, f.grad.lr, 1e-7, "lr")
    assert_rel(r.grad.beta, f.grad.beta, 1e-7, "beta")
  end)
end)

-- ---------------------------------------------------------------- 7. meta.train

describe("meta.train", function()
  local function base(fields)
    local s = spec{optimizer = ms.optim.gd{lr = 0.05}, steps = 10, method = "reverse", progress = false,
                   iterations = 5}
    for k, v in pairs(fields) do s[k] = v end
    return s
  end

  it("writes a CSV log: a header and one row per iteration, rows matching the history", function()
    local path = os.tmpname()
    local res = ms.meta.train(base{optimizer = ms.optim.momentum{lr = 0.05, beta = 0.5}, log = path, iterations = 6,
                                   meta_lr = 0.01, schedule = "inv_sqrt"})
    local lines = {}
    for line in io.lines(path) do lines[#lines + 1] = line end
    os.remove(path)
    assert.are.equal(7, #lines)
    assert.are.equal("iter,beta,lr,meta_loss,grad_beta,grad_lr,status", lines[1])
    local prev
    for k = 1, 6 do
      local cols = {}
      for c in lines[k + 1]:gmatch("[^,]+") do cols[#cols + 1] = c end
      assert.are.equal(7, #cols, lines[k + 1])
      local h = res.history[k]
      assert.are.equal(k, tonumber(cols[1]))
      assert.are.equal(h.theta.beta, tonumber(cols[2]))
      assert.are.equal(h.theta.lr, tonumber(cols[3]))
      assert.are.equal(h.value, tonumber(cols[4]))
      assert.are.equal(h.grad.beta, tonumber(cols[5]))
      assert.are.equal(h.grad.lr, tonumber(cols[6]))
      assert.are.equal("ok", cols[7])
      -- the update between rows: theta_{k+1} = theta_k - 0.01 / sqrt(k) grad_k
      local row = {beta = tonumber(cols[2]), lr = tonumber(cols[3]), gb = tonumber(cols[5]), gl = tonumber(cols[6])}
      if prev then
        local step = 0.01 / math.sqrt(k - 1)
        assert_rel(row.lr, prev.lr - step * prev.gl, 1e-15, "lr update " .. k)
        assert_rel(row.beta, prev.beta - step * prev.gb, 1e-15, "beta update " .. k)
      end
      prev = row
    end
    assert_rel(res.theta.lr, prev.lr - 0.01 / math.sqrt(6) * prev.gl, 1e-15, "final lr")
  end)

  it("an unwritable log path returns an error naming the file", function()
    assert.has_error(function() ms.meta.train(base{log = "/nonexistent-dir/x.csv"}) end,
      "meta.train: cannot write the log: /nonexistent-dir/x.csv: No such file or directory")
  end)

  it("bounds: lr is projected to 0 by default; other bounds apply to their parameter", function()
    -- past the optimum (about 0.2 at T = 10) the meta-gradient is positive, and a huge meta
    -- step overshoots below 0
    local res = ms.meta.train(base{optimizer = ms.optim.gd{lr = 0.25}, iterations = 1, meta_lr = 100,
                                   schedule = "constant"})
    assert.is_true(res.history[1].grad.lr > 0)
    assert.are.equal(0, res.theta.lr)
    -- user bounds; both meta-gradients are positive at lr = 0.2, beta = 0.5
    res = ms.meta.train(base{optimizer = ms.optim.momentum{lr = 0.2, beta = 0.5}, iterations = 1, meta_lr = 100,
                             schedule = "constant", bounds = {lr = {0.01, 1}, beta = {0.1, 0.99}}})
    assert.is_true(res.history[1].grad.lr > 0 and res.history[1].grad.beta > 0)
    assert.are.equal(0.01, res.theta.lr)
    assert.are.equal(0.1, res.theta.beta)
    -- bounds for another parameter keep lr >= 0
    res = ms.meta.train(base{optimizer = ms.optim.momentum{lr = 0.2, beta = 0.5}, iterations = 1, meta_lr = 100,
                             schedule = "constant", bounds = {beta = {0.1, 0.99}}})
    assert.are.equal(0, res.theta.lr)
    assert.are.equal(0.1, res.theta.beta)
    -- and the upper ends (a negative meta_lr is refused: it would be gradient ascent)
    res = ms.meta.train(base{optimizer = ms.optim.momentum{lr = 0.2, beta = 0.5}, iterations = 1, meta_lr = 1e-12,
                             schedule = "constant", bounds = {lr = {0.01, 0.15}, beta = {0.1, 0.3}}})
    assert.are.equal(0.15, res.theta.lr)
    assert.are.equal(0.3, res.theta.beta)
    -- log_lr is unbounded: it goes negative freely
    res = ms.meta.train(base{optimizer = ms.optim.gd{lr = 0.25, log_lr = true}, iterations = 1, meta_lr = 100,
                             schedule = "constant"})
    assert_rel(res.theta.log_lr, math.log(0.25) - 100 * res.history[1].grad.log_lr, 1e-15, "log_lr")
    assert.is_true(res.theta.log_lr < -10)
  end)

  it("clip limits each meta-gradient entry before the update", function()
    local res = ms.meta.train(base{optimizer = ms.optim.gd{lr = 0.25}, iterations = 1, meta_lr = 1,
                                   schedule = "constant", meta = "naive", clip = 1e-3})
    local g = res.history[1].grad.lr
    assert.is_true(math.abs(g) > 1e-3)  -- the record keeps the unclipped value
    assert_rel(res.theta.lr, 0.25 - 1e-3 * (g > 0 and 1 or -1), 1e-15, "clipped step")
    -- an entry inside the clip is untouched
    res = ms.meta.train(base{optimizer = ms.optim.gd{lr = 0.2}, iterations = 1, meta_lr = 1e-3,
                             schedule = "constant", meta = "naive", clip = 1e6})
    assert_rel(res.theta.lr, 0.2 - 1e-3 * res.history[1].grad.lr, 1e-15, "unclipped step")
  end)

  it("a custom schedule is called with the iteration number", function()
    local seen = {}
    local res = ms.meta.train(base{iterations = 3, meta_lr = 0.01, schedule = function(k)
      seen[#seen + 1] = k
      return 1 / k
    end})
    assert.are.same({1, 2, 3}, seen)
    local lr = 0.05
    for k = 1, 3 do
      assert.are.equal(lr, res.history[k].theta.lr)
      lr = lr - 0.01 / k * res.history[k].grad.lr
    end
    assert_rel(res.theta.lr, lr, 1e-15, "final")
  end)

  it("meta_optimizer = adam converges to the grid minimizer of G within 1%", function()
    local T = 20
    local function G(eta)
      local x = copy(W0)
      for _ = 1, T do x = lin(-eta, matvec(H, x), 1, x) end
      return math.log(fq(x)) / T
    end
    local best, bestG = nil, math.huge
    for k = 1, 1000 do -- (0, 0.5]: past 2/lambda_max, about 0.3
      local eta = k * 5e-4
      local g = G(eta)
      if g < bestG then best, bestG = eta, g end
    end
    local lo = best
    for k = -1000, 1000 do
      local eta = lo + k * 1e-6
      local g = G(eta)
      if g < bestG then best, bestG = eta, g end
    end
    for _, eta0 in ipairs{0.01, 0.18} do
      local res = ms.meta.train(base{optimizer = ms.optim.gd{lr = eta0}, steps = T, meta = "log", method = "reverse",
                                     meta_optimizer = "adam", meta_lr = 0.01, schedule = "inv_sqrt",
                                     iterations = 400})
      local where = ("from %g: learned %.8g, grid minimizer %.8g"):format(eta0, res.theta.lr, best)
      for _, h in ipairs(res.history) do assert.are.equal("ok", h.status, where) end
      assert.is_true(rel(res.theta.lr, best) < 0.01, where)
    end
  end)

  it("adam's first meta-step is meta_lr against the sign of the gradient", function()
    local res = ms.meta.train(base{iterations = 1, meta_lr = 0.002, meta_optimizer = "adam", schedule = "constant"})
    local g = res.history[1].grad.lr
    assert_rel(res.theta.lr, 0.05 - 0.002 * g / (math.abs(g) + 1e-8), 1e-14, "first adam step")
  end)

  it("batch averaging over a task sampler averages values and meta-gradients", function()
    local function sampler() return ms.tasks.quadratic{d = 5, eigenvalues = {1, 6}, seed = 4} end
    local opt = ms.optim.momentum{lr = 0.05, beta = 0.5}
    local res = ms.meta.train{sample = sampler(), batch = 3, optimizer = opt, steps = 10, meta = "log",
                              method = "reverse", iterations = 2, meta_lr = 0.01, progress = false}
    local fresh = sampler()
    for k = 1, 2 do
      local h = res.history[k]
      local v, gl, gb = 0, 0, 0
      local tasks = {}
      for i = 1, 3 do
        local task = fresh()
        tasks[i] = task
        assert.are.equal((k - 1) * 3 + i, task.index)
        local r = ms.meta.value_and_grad{objective = task.objective, w0 = task.w0, optimizer = opt, theta = h.theta,
                                         steps = 10, meta = "log", method = "reverse"}
        v, gl, gb = v + r.value / 3, gl + r.grad.lr / 3, gb + r.grad.beta / 3
      end
      assert_rel(h.value, v, 1e-13, "value " .. k)
      assert_rel(h.grad.lr, gl, 1e-13, "d/dlr " .. k)
      assert_rel(h.grad.beta, gb, 1e-13, "d/dbeta " .. k)
      -- value_and_grad with tasks = {...} does the same averaging
      local r = ms.meta.value_and_grad{tasks = tasks, optimizer = opt, theta = h.theta, steps = 10, meta = "log",
                                       method = "stable"}
      assert_rel(r.value, v, 1e-12, "tasks value " .. k)
      assert_rel(r.grad.lr, gl, 1e-10, "tasks d/dlr " .. k)
      assert_rel(r.grad.beta, gb, 1e-10, "tasks d/dbeta " .. k)
    end
    -- the tasks differ, so the average is not any single task's value
    assert.are_not.equal(res.history[1].value, res.history[2].value)
  end)

  -- GD with step 1 on H (lambda_max about 9) diverges: reverse mode overflows on a long unroll.
  local function failing(fields)
    local s = base{optimizer = ms.optim.gd{lr = 1}, steps = 400, meta = "naive", iterations = 3}
    for k, v in pairs(fields) do s[k] = v end
    return s
  end
  -- the first step at which the plain-Lua iterate or its loss is not finite
  local function overflow_step()
    local x = copy(W0)
    for t = 1, 400 do
      x = lin(-1, matvec(H, x), 1, x)
      local f = fq(x)
      if f ~= f or f == math.huge then return t end
    end
  end

  it("on_failure = skip leaves theta unchanged on a failed iteration", function()
    local res = ms.meta.train(failing{on_failure = "skip"})
    assert.are.equal(3, #res.history)
    for _, h in ipairs(res.history) do
      assert.are.equal("overflow", h.status)
      assert.are.equal(1, h.theta.lr)
    end
    assert.are.equal(1, res.theta.lr)
    -- skip is the default
    assert.are.equal(1, ms.meta.train(failing{}).theta.lr)
  end)

  it("on_failure = error raises with the status and the step in the message", function()
    local path = os.tmpname()
    local msg = err_of(function() ms.meta.train(failing{on_failure = "error", log = path}) end)
    assert.are.equal(("meta.train: iteration 1: meta-gradient status overflow (step %d)"):format(overflow_step()), msg)
    -- the log is closed and holds the failed row
    local lines = {}
    for line in io.lines(path) do lines[#lines + 1] = line end
    os.remove(path)
    assert.are.equal(2, #lines)
    assert.is_truthy(lines[2]:match(",overflow$"), lines[2])
  end)

  it("skip and zero on a non-ok iteration whose meta-gradient is finite", function()
    -- the value is +inf (status overflow), its derivative the finite one of f(w_T)
    local function inf_meta(traj) return traj.losses[traj.T] + math.huge end
    local skip = ms.meta.train(base{meta = inf_meta, iterations = 2, meta_lr = 1e-3, on_failure = "skip"})
    local zero = ms.meta.train(base{meta = inf_meta, iterations = 1, meta_lr = 1e-3, on_failure = "zero"})
    local g = zero.history[1].grad.lr
    assert.are.equal("overflow", zero.history[1].status)
    assert.is_true(g == g and math.abs(g) < math.huge and g ~= 0)
    assert.are.equal(0.05, skip.theta.lr)
    assert.are.equal("overflow", skip.history[2].status)
    assert_rel(zero.theta.lr, 0.05 - 1e-3 * g, 1e-15, "zero keeps the finite entries")
  end)

  it("on_failure = zero takes a step with 0 for the non-finite entries", function()
    local res = ms.meta.train(failing{on_failure = "zero"})
    assert.are.equal(1, res.theta.lr)
  end)

  it("progress = true writes a progress line to stderr; progress = false writes nothing", function()
    local real, out = io.stderr, {}
    io.stderr = {write = function(self, ...)
      for _, s in ipairs{...} do out[#out + 1] = tostring(s) end
      return self
    end}
    local res
    local ok, err = pcall(function()
      res = ms.meta.train(base{iterations = 2, progress = true})
      out[#out + 1] = "|"
      ms.meta.train(base{iterations = 2, progress = false})
    end)
    io.stderr = real
    assert.is_true(ok, err)
    local text = table.concat(out)
    local before, after = text:match("^(.*)|(.*)$")
    assert.are.equal("", after)
    -- the stand-in stream is not a terminal: one plain line per update (no \r), theta after
    -- the update; each update shows the rate and the time left
    local h = res.history
    local rate = "  [%d.]+ it/s  %d+s left\n"
    local want = ("meta 1/2  lr=%.6g  meta=%.6g  ok"):format(h[2].theta.lr, h[1].value):gsub("%p", "%%%0")
      .. rate .. ("meta 2/2  lr=%.6g  meta=%.6g  ok"):format(res.theta.lr, h[2].value):gsub("%p", "%%%0")
      .. rate
    assert.truthy(before:match("^" .. want .. "$"), before)
  end)

  it("callback receives each record", function()
    local ks = {}
    ms.meta.train(base{iterations = 3, callback = function(k, rec)
      ks[#ks + 1] = k
      assert.are.equal(k, rec.k)
      assert.are.equal("ok", rec.status)
    end})
    assert.are.same({1, 2, 3}, ks)
  end)
end)

-- ---------------------------------------------------------------- 8. bad input

describe("bad input", function()
  it("step sizes", function()
    assert.are.equal("optim.gd: option 'lr' must be a number, got string", err_of(function() ms.optim.gd{lr = "0.1"} end))
    assert.are.equal("optim.gd: option 'lr' must be a number, got nil", err_of(function() ms.optim.gd{} end))
    assert.are.equal("optim.momentum: option 'lr' must be >= 0, got -0.1",
      err_of(function() ms.optim.momentum{lr = -0.1} end))
    assert.are.equal("optim.adam: option 'lr' must be a number, got table", err_of(function() ms.optim.adam{lr = {}} end))
    assert.are.equal("optim.sgd: option 'lr' must be >= 0, got -1", err_of(function() ms.optim.sgd{lr = -1} end))
    assert.are.equal("optim.gd: expected an options table, got string", err_of(function() ms.optim.gd("fast") end))
    -- log(0) is not a step size
    assert.are.equal("optim.gd: option 'lr' must be > 0, got 0", err_of(function() ms.optim.gd{lr = 0, log_lr = true} end))
    assert.are.equal(0, ms.optim.gd{lr = 0}.theta.lr)
  end)

  it("momentum and adam hyper-parameters", function()
    assert.are.equal("optim.momentum: option 'beta' must be >= 0, got -0.5",
      err_of(function() ms.optim.momentum{lr = 0.1, beta = -0.5} end))
    assert.are.equal("optim.momentum: option 'beta' must be a number, got boolean",
      err_of(function() ms.optim.momentum{lr = 0.1, beta = true} end))
    assert.are.equal("optim.adam: beta1 and beta2 must be < 1", err_of(function() ms.optim.adam{lr = 0.1, beta1 = 1} end))
    assert.are.equal("optim.adam: beta1 and beta2 must be < 1",
      err_of(function() ms.optim.adam{lr = 0.1, beta2 = 1.5} end))
    assert.are.equal("optim.adam: option 'beta1' must be >= 0, got -0.1",
      err_of(function() ms.optim.adam{lr = 0.1, beta1 = -0.1} end))
    assert.are.equal("optim.adam: option 'eps' must be > 0, got 0", err_of(function() ms.optim.adam{lr = 0.1, eps = 0} end))
    -- a negative beta given as a theta override
    assert.are.equal("meta: meta-parameter 'beta' must be >= 0, got -0.5", err_of(function()
      ms.meta.value_and_grad(spec{optimizer = ms.optim.momentum{lr = 0.1}, theta = {beta = -0.5}})
    end))
  end)

  it("sgd options, and sgd on an objective without samples", function()
    assert.are.equal("optim.sgd: option 'batch' must be >= 1, got 0", err_of(function() ms.optim.sgd{lr = 0.1, batch = 0} end))
    assert.are.equal("optim.sgd: option 'batch' must be an integer", err_of(function() ms.optim.sgd{lr = 0.1, batch = 2.5} end))
    assert.are.equal("optim.sgd: option 'seed' must be an integer", err_of(function() ms.optim.sgd{lr = 0.1, seed = 0.5} end))
    assert.are.equal("meta: optimizer 'sgd' draws mini-batches and needs an objective with samples " ..
                     "(least squares, logistic), got 'quadratic'", err_of(function()
      ms.meta.value_and_grad(spec{optimizer = ms.optim.sgd{lr = 0.1}})
    end))
  end)

  it("schedules", function()
    assert.are.equal("optim.gd: option 'schedule' must be a function of the step or a table of factors, got string",
      err_of(function() ms.optim.gd{lr = 0.1, schedule = "cosine"} end))
    assert.are.equal("optim.gd: option 'schedule' must not be an empty table",
      err_of(function() ms.optim.gd{lr = 0.1, schedule = {}} end))
    assert.are.equal("optim.momentum: option 'schedule' must hold numbers, entry 2 is a string",
      err_of(function() ms.optim.momentum{lr = 0.1, schedule = {1, "half"}} end))
    assert.are.equal("meta: method 'exact' does not handle step-size schedules", err_of(function()
      ms.meta.value_and_grad(spec{optimizer = ms.optim.gd{lr = 0.1, schedule = {1}}, method = "exact"})
    end))
  end)

  it("optim.new", function()
    assert.are.equal("optim.new: field 'step' must be a function, got nil",
      err_of(function() ms.optim.new{theta = {lr = 0.1}} end))
    assert.are.equal("optim.new: field 'step' must be a function, got string",
      err_of(function() ms.optim.new{step = "w - g"} end))
    assert.are.equal("optim.new: expected a table, got number", err_of(function() ms.optim.new(3) end))
    assert.are.equal("optim.new: field 'theta' must be a table of numbers, got number",
      err_of(function() ms.optim.new{theta = 0.1, step = function() end} end))
    -- a non-number theta entry is caught when the optimizer is used
    local bad = ms.optim.new{theta = {lr = "big"}, step = function(_, s, w) return w, s end}
    assert.are.equal("meta: meta-parameter 'lr' must be a number, got string",
      err_of(function() ms.meta.value_and_grad(spec{optimizer = bad}) end))
  end)

  it("optimizer errors point at the caller", function()
    local here = debug.getinfo(1, "S").short_src
    local function where(f)
      local ok, err = pcall(f)
      assert.is_false(ok)
      return err:match("^(.-):%d+: ")
    end
    assert.are.equal(here, where(function() ms.optim.momentum{lr = 0.1, beta = -1} end))
    assert.are.equal(here, where(function() ms.optim.adam{lr = 0.1, beta1 = 2} end))
    assert.are.equal(here, where(function() ms.optim.adam{lr = "x"} end))
    assert.are.equal(here, where(function() ms.optim.sgd{lr = 0.1, batch = 0} end))
    assert.are.equal(here, where(function() ms.optim.gd{lr = 0.1, schedule = 3} end))
    assert.are.equal(here, where(function() ms.optim.new{} end))
  end)

  it("truncate", function()
    assert.are.equal("meta: 'truncate' must be an integer number of steps >= 1, got 0",
      err_of(function() ms.meta.value_and_grad(spec{optimizer = ms.optim.gd{lr = 0.1}, truncate = 0}) end))
    assert.are.equal("meta: 'truncate' must be an integer number of steps >= 1, got 2.5",
      err_of(function() ms.meta.value_and_grad(spec{optimizer = ms.optim.gd{lr = 0.1}, truncate = 2.5}) end))
    assert.are.equal("meta: method 'stable' does not handle truncation", err_of(function()
      ms.meta.value_and_grad(spec{optimizer = ms.optim.gd{lr = 0.1}, truncate = 2, method = "stable"})
    end))
  end)

  it("meta.train options", function()
    assert.are.equal("meta.train: expected an options table, got number", err_of(function() ms.meta.train(3) end))
    assert.are.equal("meta.train: unknown schedule 'cosine' (inv_sqrt, constant or a function)",
      err_of(function() ms.meta.train(spec{optimizer = ms.optim.gd{lr = 0.1}, schedule = "cosine"}) end))
    assert.are.equal("meta.train: unknown on_failure 'ignore' (skip, zero or error)",
      err_of(function() ms.meta.train(spec{optimizer = ms.optim.gd{lr = 0.1}, on_failure = "ignore"}) end))
    assert.are.equal("meta.train: unknown meta_optimizer 'sgd' (gd, adam or rmsprop)",
      err_of(function() ms.meta.train(spec{optimizer = ms.optim.gd{lr = 0.1}, meta_optimizer = "sgd"}) end))
  end)
end)

describe("meta.train on_failure = 'zero'", function()
  local ms = require "metastep"
  it("replaces a non-finite meta-gradient by 0 before clipping (the authors' TensorFlow rule)", function()
    local obj = ms.objective.quadratic(ms.tensor{{100, 0}, {0, 1}})
    local spec = {objective = obj, w0 = ms.tensor{1, 1}, optimizer = ms.optim.gd{lr = 1}, steps = 200,
                  meta = "naive", method = "stable"}
    -- F'(1) = +inf in doubles here: |1 - 100| ^ 400 overflows
    assert.are.equal(math.huge, ms.meta.value_and_grad(spec).grad.lr)
    spec.iterations, spec.meta_lr, spec.on_failure, spec.clip, spec.progress = 1, 0.01, "zero", 1e4, false
    assert.are.equal(1, ms.meta.train(spec).theta.lr)
  end)
end)
