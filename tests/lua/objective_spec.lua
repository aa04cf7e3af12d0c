-- Objectives through the Lua API (lua/src/lms_objective.c): the built-in quadratic,
-- least-squares and logistic objectives against closed forms computed here with plain
-- Lua arithmetic, gradients checked with check_grad (first order through :value,
-- second order through :grad), objectives whose callbacks are Lua functions (with grad
-- and hvp derived by the engine when absent), and the errors at the boundary.
local ms = require "metastep"
local h = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "tests/lua") .. "/helpers.lua")
local err_of, assert_close, assert_num = h.err_of, h.assert_close, h.assert_num

local function assert_grad(what, f, x)
  local ok, err, report = ms.check_grad(f, x, {rtol = 1e-6})
  assert.is_true(ok, ("%s: %s (normalized error %g)"):format(what, report, err))
end

-- plain Lua linear algebra on nested tables
local matvec = h.matvec

local function sigm(z) return 1 / (1 + math.exp(-z)) end

-- a symmetric positive definite matrix A^T A + I from fixed numbers
local function spd(d, seed)
  local A = ms.randn({d, d}, {seed = seed}):totable()
  local H = {}
  for i = 1, d do
    H[i] = {}
    for j = 1, d do
      local s = (i == j) and 1 or 0
      for k = 1, d do s = s + A[k][i] * A[k][j] end
      H[i][j] = s
    end
  end
  return H
end

-- Checks value, grad and hvp of obj at w along v against closed forms f0, g0, Hv0, and
-- the gradients through the tape against central differences.
local function check_objective(what, obj, w, v, f0, g0, hv0)
  local f = obj:value(w)
  assert.are.same({}, f:shape(), what .. ": value is 0-d")
  assert_num(f:item(), f0, 1e-12, what .. " value")
  assert_close(obj:grad(w), g0, 1e-12, what .. " grad")
  assert_close(obj:hvp(w, v), hv0, 1e-12, what .. " hvp")
  -- first order: the tape sees through :value
  assert_grad(what .. " value", function(x) return obj:value(x) end, w)
  assert_close(ms.grad(function(x) return obj:value(x) end)(w), g0, 1e-12, what .. " tape over value")
  -- second order: the tape sees through :grad; d/dw <grad(w), v> = H v
  assert_grad(what .. " <grad, v>", function(x) return ms.dot(obj:grad(x), v) end, w)
  assert_close(ms.grad(function(x) return ms.dot(obj:grad(x), v) end)(w), hv0, 1e-12,
    what .. " tape over grad")
  -- and forward mode over :grad gives the same H v
  local _, t = ms.jvp(function(x) return obj:grad(x) end, w, v)
  assert_close(t, hv0, 1e-12, what .. " forward over grad")
end

describe("built-in objectives", function()
  after_each(function() assert.are.equal(0, ms.ad_depth()) end)

  it("quadratic: value, gradient and Hessian-vector product", function()
    local d = 4
    local H = spd(d, 3)
    local ws = ms.randn({d}, {seed = 4}):totable()
    local w = ms.randn({d}, {seed = 5})
    local v = ms.randn({d}, {seed = 6})
    local wt, vt = w:totable(), v:totable()
    local obj = ms.core.objective_quadratic(ms.tensor(H), {wstar = ms.tensor(ws), fstar = 0.5})
    local r = {}
    for i = 1, d do r[i] = wt[i] - ws[i] end
    local Hr = matvec(H, r)
    local f0 = 0.5
    for i = 1, d do f0 = f0 + 0.5 * r[i] * Hr[i] end
    check_objective("quadratic", obj, w, v, f0, Hr, matvec(H, vt))
    assert.are.equal(d, obj:dim())
    assert.are.equal("quadratic", obj:name())
    assert.are.equal("Objective(quadratic, dim 4)", tostring(obj))
    assert.are.equal(ms.Objective_mt, getmetatable(obj))
  end)

  it("quadratic without wstar and fstar: f = 1/2 w^T H w", function()
    local H = {{2, 1}, {1, 3}}
    local obj = ms.core.objective_quadratic(ms.tensor(H))
    local w, v = ms.tensor{1, -2}, ms.tensor{0.5, 1}
    -- H w = {0, -5}; f = 1/2 (1*0 + (-2)(-5)) = 5
    check_objective("quadratic0", obj, w, v, 5, {0, -5}, {2, 3.5})
    local Hp, wsp, fs = obj:parts()
    assert.are.same(H, Hp:totable())
    assert.is_nil(wsp)
    assert.are.equal(0, fs)
  end)

  it("quadratic parts are copies", function()
    local H = ms.tensor{{2, 1}, {1, 3}}
    local obj = ms.core.objective_quadratic(H, {wstar = ms.tensor{1, 1}, fstar = 2})
    H:fill(7) -- the objective kept its own copy
    local Hp, wsp, fs = obj:parts()
    assert.are.same({{2, 1}, {1, 3}}, Hp:totable())
    assert.are.same({1, 1}, wsp:totable())
    assert.are.equal(2, fs)
    Hp:fill(0)
    wsp:fill(0)
    assert.are.equal(2, obj:value(ms.tensor{1, 1}):item())
  end)

  it("least squares: value, gradient and Hessian-vector product", function()
    local n, d = 7, 3
    local X = ms.randn({n, d}, {seed = 11}):totable()
    local y = ms.randn({n}, {seed = 12}):totable()
    local w = ms.randn({d}, {seed = 13})
    local v = ms.randn({d}, {seed = 14})
    local obj = ms.core.objective_least_squares(ms.tensor(X), ms.tensor(y))
    local r = matvec(X, w:totable())
    local Xv = matvec(X, v:totable())
    local f0, g0, hv0 = 0, {0, 0, 0}, {0, 0, 0}
    for k = 1, n do
      r[k] = r[k] - y[k]
      f0 = f0 + r[k] * r[k] / (2 * n)
      for i = 1, d do
        g0[i] = g0[i] + X[k][i] * r[k] / n
        hv0[i] = hv0[i] + X[k][i] * Xv[k] / n
      end
    end
    check_objective("least_squares", obj, w, v, f0, g0, hv0)
    assert.are.equal("least_squares", obj:name())
  end)

  for _, l2 in ipairs{0, 0.25} do
    it(("logistic (l2 = %g): value, gradient and Hessian-vector product"):format(l2), function()
      local n, d = 9, 3
      local X = ms.randn({n, d}, {seed = 21}):totable()
      local y = {}
      for k, z in ipairs(ms.randn({n}, {seed = 22}):totable()) do y[k] = z > 0 and 1 or 0 end
      local w = ms.randn({d}, {seed = 23})
      local v = ms.randn({d}, {seed = 24})
      local wt, vt = w:totable(), v:totable()
      local obj = ms.core.objective_logistic(ms.tensor(X), ms.tensor(y), l2)
      local z, Xv = matvec(X, wt), matvec(X, vt)
      local f0, g0, hv0 = 0, {}, {}
      for i = 1, d do
        f0 = f0 + l2 / 2 * wt[i] ^ 2
        g0[i] = l2 * wt[i]
        hv0[i] = l2 * vt[i]
      end
      for k = 1, n do
        local s = 2 * y[k] - 1
        f0 = f0 + math.log(1 + math.exp(-s * z[k])) / n
        local a = sigm(z[k]) * (1 - sigm(z[k]))
        for i = 1, d do
          g0[i] = g0[i] - s * sigm(-s * z[k]) * X[k][i] / n
          hv0[i] = hv0[i] + a * Xv[k] * X[k][i] / n
        end
      end
      check_objective("logistic", obj, w, v, f0, g0, hv0)
    end)
  end

  it("logistic l2 defaults to 0", function()
    local X, y = ms.tensor{{1, 0}, {0, 1}}, ms.tensor{1, 0}
    local a = ms.core.objective_logistic(X, y)
    local b = ms.core.objective_logistic(X, y, 0)
    local w = ms.tensor{0.3, -0.7}
    assert.are.equal(b:value(w):item(), a:value(w):item())
    -- at w = 0 every example costs log 2
    assert_num(a:value(ms.zeros(2)):item(), math.log(2), 1e-15, "log 2")
  end)

  it("objectives give their memory back when collected", function()
    h.assert_no_leak(function()
      local X = ms.randn({50, 10}, {seed = 1})
      local y = ms.gt(ms.randn({50}, {seed = 2}), 0)
      local objs = {ms.core.objective_logistic(X, y, 0.1), ms.core.objective_least_squares(X, y),
                    ms.core.objective_quadratic(ms.eye(10))}
      for _, o in ipairs(objs) do o:hvp(ms.zeros(10), ms.ones(10)) end
      local cb = ms.core.objective_from_callbacks{dim = 10, value = function(w) return (w * w):sum() end}
      cb:hvp(ms.ones(10), ms.ones(10))
    end)
  end)
end)

describe("objectives with Lua callbacks", function()
  after_each(function() assert.are.equal(0, ms.ad_depth()) end)

  -- f(w) = 1/4 sum c_i w_i^4 + sum w_i: grad c w^3 + 1, H v = 3 c w^2 v
  local c = ms.tensor{1.5, 0.5, 2}
  local function value(w) return (c * w ^ 4):sum() * 0.25 + w:sum() end
  local function closed(w, v)
    local ct, wt, vt = c:totable(), w:totable(), v:totable()
    local f, g, hv = 0, {}, {}
    for i = 1, #wt do
      f = f + 0.25 * ct[i] * wt[i] ^ 4 + wt[i]
      g[i] = ct[i] * wt[i] ^ 3 + 1
      hv[i] = 3 * ct[i] * wt[i] ^ 2 * vt[i]
    end
    return f, g, hv
  end
  local w, v = ms.tensor{0.7, -1.2, 0.4}, ms.tensor{1, -0.5, 2}

  it("value only: grad by reverse mode, hvp by forward over reverse (in C)", function()
    local obj = ms.core.objective_from_callbacks{name = "quartic", dim = 3, value = value}
    assert.are.equal("quartic", obj:name())
    assert.are.equal(3, obj:dim())
    check_objective("quartic (value only)", obj, w, v, closed(w, v))
  end)

  it("value and grad: hvp by forward mode over the Lua grad", function()
    local calls = 0
    local obj = ms.core.objective_from_callbacks{name = "quartic", dim = 3, value = value,
      grad = function(x) calls = calls + 1; return c * x ^ 3 + 1 end}
    check_objective("quartic (value, grad)", obj, w, v, closed(w, v))
    assert.is_true(calls > 0)
  end)

  it("a given hvp is used as it is", function()
    local obj = ms.core.objective_from_callbacks{dim = 3, value = value,
      hvp = function(x, u) return x * 0 + u * 10 end}
    assert.are.equal("objective", obj:name())
    assert.are.same({10, -5, 20}, obj:hvp(w, v):totable())
  end)

  it("a callback objective inside grad and through an unrolled loop", function()
    local obj = ms.core.objective_from_callbacks{dim = 3, value = value}
    -- d/d eta of f(w - eta grad f(w)) = -grad f(w1) . grad f(w)
    local G = function(eta)
      return obj:value(w - obj:grad(w) * eta)
    end
    local eta = 0.05
    local _, g0 = closed(w, v)
    local w1 = {}
    for i, wi in ipairs(w:totable()) do w1[i] = wi - eta * g0[i] end
    local _, g1 = closed(ms.tensor(w1), v)
    local expect = 0
    for i = 1, 3 do expect = expect - g1[i] * g0[i] end
    assert_num(ms.grad(G)(eta), expect, 1e-12, "meta-gradient")
    assert_grad("meta-gradient", G, eta)
  end)

  it("an error inside a callback surfaces with its message and a traceback", function()
    local obj = ms.core.objective_from_callbacks{name = "boom", dim = 3,
      value = function() error("value exploded") end,
      grad = function() error("grad exploded") end}
    local msg = err_of(obj.value, obj, w)
    assert.truthy(msg:find("boom: error in value: ", 1, true), msg)
    assert.truthy(msg:find("value exploded", 1, true), msg)
    assert.truthy(msg:find("stack traceback", 1, true), msg)
    assert.truthy(msg:find("objective_spec.lua", 1, true), msg)
    local msg2 = err_of(obj.hvp, obj, w, v) -- derived hvp calls the Lua grad
    assert.truthy(msg2:find("boom: error in grad: ", 1, true), msg2)
    assert.truthy(msg2:find("grad exploded", 1, true), msg2)
    assert.truthy(msg2:find("stack traceback", 1, true), msg2)
    -- derived grad through a failing value: the tape is gone afterwards
    local vonly = ms.core.objective_from_callbacks{name = "boom2", dim = 3,
      value = function(x) local y = x * x; error({}) ; return y end}
    local msg3 = err_of(vonly.grad, vonly, w)
    assert.truthy(msg3:find("boom2: error in value: (error object is a table value)", 1, true), msg3)
    assert.are.equal(0, ms.ad_depth())
  end)

  it("callbacks returning the wrong thing are clear errors", function()
    local obj = ms.core.objective_from_callbacks{name = "bad", dim = 3,
      value = function(x) return x * 2 end,
      grad = function() return ms.zeros(2) end,
      hvp = function() return 1 end}
    assert.are.equal("bad: value returned shape [3], expected a scalar (0-d tensor)",
      err_of(obj.value, obj, w))
    assert.are.equal("bad: grad returned shape [2], expected [3]", err_of(obj.grad, obj, w))
    assert.are.equal("bad: hvp must return a tensor, got number", err_of(obj.hvp, obj, w, v))
    local nothing = ms.core.objective_from_callbacks{name = "nothing", dim = 3, value = function() end}
    assert.are.equal("nothing: value must return a tensor, got nil", err_of(nothing.value, nothing, w))
    assert.are.equal("nothing: value must return a tensor, got nil", err_of(nothing.grad, nothing, w))
    local num = ms.core.objective_from_callbacks{name = "num", dim = 3, value = function() return 3 end}
    assert.are.equal("num: value must return a tensor, got number", err_of(num.value, num, w))
    -- a one-element [1] result is accepted and handed out as 0-d
    local one = ms.core.objective_from_callbacks{dim = 3, value = function(x) return ms.dot(x, x):view(1) end}
    assert.are.same({}, one:value(w):shape())
    assert_close(one:grad(w), (w * 2):totable(), 1e-15, "grad of |w|^2")
  end)

  it("an objective closed inside its own callback finishes the call, then is released", function()
    local obj
    obj = ms.core.objective_from_callbacks{name = "selfclose", dim = 3, value = function(x)
      getmetatable(obj).__close(obj)
      collectgarbage()
      return (x * x):sum()
    end}
    assert_close(obj:grad(w), (w * 2):totable(), 1e-15, "grad")
    assert.are.equal("calling 'value' on bad self (objective has been released)",
      err_of(function() return obj:value(w) end))
    assert.are.equal("Objective (released)", tostring(obj))
  end)
end)

describe("objective errors at the boundary", function()
  local H = ms.tensor{{2, 1, 0}, {1, 3, 0}, {0, 0, 1}}
  local q = ms.core.objective_quadratic(H)

  it("wrong types", function()
    assert.are.equal("bad argument #1 to 'value' (tensor expected, got string)", err_of(function() return q:value("x") end))
    assert.are.equal("bad argument #1 to 'grad' (tensor expected, got nil)", err_of(function() return q:grad() end))
    assert.are.equal("bad argument #2 to 'hvp' (tensor expected, got nil)",
      err_of(function() return q:hvp(ms.zeros(3), nil) end))
    assert.are.equal("bad argument #1 to 'value' (metastep.Objective expected, got table)",
      err_of(function() return q.value({}, ms.zeros(3)) end))
    assert.are.equal("bad argument #1 to 'objective_quadratic' (tensor expected, got string)",
      err_of(function() return ms.core.objective_quadratic("H") end))
    assert.are.equal("bad argument #2 to 'objective_quadratic' (table expected, got number)",
      err_of(function() return ms.core.objective_quadratic(H, 3) end))
    assert.are.equal("bad argument #2 to 'objective_quadratic' (field 'wstar' must be a tensor, got string)",
      err_of(function() return ms.core.objective_quadratic(H, {wstar = "w"}) end))
    assert.are.equal("bad argument #2 to 'objective_quadratic' (field 'fstar' must be a number, got table)",
      err_of(function() return ms.core.objective_quadratic(H, {fstar = {}}) end))
    assert.are.equal("bad argument #2 to 'objective_least_squares' (tensor expected, got nil)",
      err_of(function() return ms.core.objective_least_squares(H) end))
    assert.are.equal("bad argument #3 to 'objective_logistic' (number expected, got string)",
      err_of(function() return ms.core.objective_logistic(H, ms.zeros(3), "l2") end))
    assert.are.equal("bad argument #1 to 'objective_from_callbacks' (table expected, got function)",
      err_of(function() return ms.core.objective_from_callbacks(function() end) end))
    assert.are.equal("bad argument #1 to 'objective_from_callbacks' (field 'value' must be a function, got nil)",
      err_of(function() return ms.core.objective_from_callbacks({dim = 3}) end))
    assert.are.equal("bad argument #1 to 'objective_from_callbacks' (field 'grad' must be a function, got string)",
      err_of(function() return ms.core.objective_from_callbacks({dim = 3, value = print, grad = "g"}) end))
    assert.are.equal("bad argument #1 to 'objective_from_callbacks' (field 'dim' must be an integer >= 1, got nil)",
      err_of(function() return ms.core.objective_from_callbacks({value = print}) end))
    assert.are.equal("bad argument #1 to 'objective_from_callbacks' (field 'dim' must be an integer >= 1, got 0)",
      err_of(function() return ms.core.objective_from_callbacks({dim = 0, value = print}) end))
    assert.are.equal("bad argument #1 to 'objective_from_callbacks' (field 'dim' must be an integer >= 1, got 2.5)",
      err_of(function() return ms.core.objective_from_callbacks({dim = 2.5, value = print}) end))
    assert.are.equal("bad argument #1 to 'objective_from_callbacks' (field 'name' must be a string, got boolean)",
      err_of(function() return ms.core.objective_from_callbacks({dim = 1, value = print, name = true}) end))
  end)

  it("wrong shapes and values", function()
    assert.are.equal("quadratic: w has shape [5], expected [3]", err_of(q.value, q, ms.zeros(5)))
    assert.are.equal("quadratic: w has shape [3,1], expected [3]", err_of(q.grad, q, ms.zeros(3, 1)))
    assert.are.equal("quadratic: w has shape [], expected [3]", err_of(q.grad, q, ms.tensor(1)))
    assert.are.equal("quadratic: v has shape [2], expected [3]", err_of(q.hvp, q, ms.zeros(3), ms.zeros(2)))
    assert.are.equal("quadratic: H must be a square matrix [d,d], got shape [2,3]",
      err_of(ms.core.objective_quadratic, ms.zeros(2, 3)))
    assert.are.equal("quadratic: wstar has shape [2], expected [3] (H is [3,3])",
      err_of(ms.core.objective_quadratic, H, {wstar = ms.zeros(2)}))
    assert.are.equal("quadratic: fstar must be finite, got nan",
      err_of(ms.core.objective_quadratic, H, {fstar = 0 / 0}):gsub("%-nan", "nan"))
    assert.are.equal("quadratic: H must be symmetric, got H[1,2] = 1 and H[2,1] = 2 "
      .. "(tolerance 1e-10 * max|H| = 3e-10)",
      err_of(ms.core.objective_quadratic, ms.tensor{{1, 1}, {2, 3}}))
    assert.are.equal("least_squares: y has shape [2], expected [3] (one entry per row of X [3,2])",
      err_of(ms.core.objective_least_squares, ms.zeros(3, 2), ms.zeros(2)))
    assert.are.equal("logistic: y must hold labels 0 or 1, got y[2] = 2",
      err_of(ms.core.objective_logistic, ms.zeros(3, 2), ms.tensor{0, 2, 1}))
    assert.are.equal("logistic: l2 must be finite and >= 0, got -0.5",
      err_of(ms.core.objective_logistic, ms.zeros(3, 2), ms.tensor{0, 1, 1}, -0.5))
    assert.are.equal("quadratic_parts: objective 'least_squares' is not a quadratic",
      err_of(function()
        local o = ms.core.objective_least_squares(ms.zeros(3, 2), ms.zeros(3))
        return o:parts()
      end))
  end)

  it("released objectives and tensors", function()
    local o = ms.core.objective_quadratic(H)
    getmetatable(o).__close(o)
    getmetatable(o).__close(o) -- closing twice is harmless
    assert.are.equal("calling 'grad' on bad self (objective has been released)", err_of(function() return o:grad(ms.zeros(3)) end))
    assert.are.equal("calling 'dim' on bad self (objective has been released)", err_of(function() return o:dim() end))
    local t = ms.zeros(3)
    getmetatable(t).__close(t)
    assert.are.equal("bad argument #1 to 'value' (tensor has been released)", err_of(function() return q:value(t) end))
    assert.are.equal("bad argument #2 to 'objective_quadratic' (field 'wstar': tensor has been released)",
      err_of(function() return ms.core.objective_quadratic(H, {wstar = t}) end))
    do
      local closed <close> = ms.core.objective_quadratic(H)
      assert.are.equal(3, closed:dim())
    end
  end)
end)

describe("ms.objective: one objective type", function()
  after_each(function() assert.are.equal(0, ms.ad_depth()) end)

  -- the full error message, position included
  local function raw_err(fn, ...)
    local ok, msg = pcall(fn, ...)
    assert.is_false(ok, "expected an error")
    return msg
  end
  local here = "objective_spec.lua:"

  -- plain Lua least squares on rows idx of X, y (nested tables): value and gradient at w
  local function ls_closed(X, y, idx, w)
    local m, f, g = #idx, 0, {}
    for i = 1, #w do g[i] = 0 end
    for _, k in ipairs(idx) do
      local r = -y[k]
      for i = 1, #w do r = r + X[k][i] * w[i] end
      f = f + r * r / (2 * m)
      for i = 1, #w do g[i] = g[i] + X[k][i] * r / m end
    end
    return f, g
  end

  it("every constructor returns the C userdata", function()
    local X, y = ms.randn({5, 2}, {seed = 1}), ms.tensor{1, 0, 1, 1, 0}
    local objs = {ms.objective.quadratic(ms.eye(2)), ms.objective.least_squares(X, y),
                  ms.objective.logistic(X, y, 0.5),
                  ms.objective.random_quadratic{d = 2, seed = 3},
                  ms.objective.from_function(function(w) return ms.dot(w, w) end, {dim = 2})}
    local kinds = {"quadratic", "least_squares", "logistic", "quadratic", "function"}
    for i, o in ipairs(objs) do
      assert.are.equal("userdata", type(o))
      assert.are.equal(ms.Objective_mt, getmetatable(o))
      assert.are.equal(kinds[i], o.kind)
      assert.are.equal(2, o:dim())
      assert.are.equal("function", type(o.value))
    end
    assert.are.equal("function", objs[5]:name())
    assert.are.equal("Objective(function, dim 2)", tostring(objs[5]))
    -- methods added to ms.Objective reach every objective
    ms.Objective.twice_dim = function(o) return 2 * o:dim() end
    assert.are.equal(4, objs[2]:twice_dim())
    ms.Objective.twice_dim = nil
  end)

  it("quadratic fields: H, wstar, fstar (copies, made once)", function()
    local H = ms.tensor{{2, 1}, {1, 3}}
    local q = ms.objective.quadratic(H, {wstar = ms.tensor{1, -1}, fstar = 0.5})
    assert.are.same({{2, 1}, {1, 3}}, q.H:totable())
    assert.are.same({1, -1}, q.wstar:totable())
    assert.are.equal(0.5, q.fstar)
    assert.are.equal(q.H, q.H) -- the same tensor every time
    assert.is_nil(q.n)
    assert.is_nil(q.X)
    assert.is_nil(q.y)
    assert.is_nil(q.l2)
    q.H:fill(0) -- a copy: the objective does not change
    -- w - w* = (1, 0): f = 1/2 * 2 + 0.5
    assert.are.equal(1.5, q:value(ms.tensor{2, -1}):item())
    local q0 = ms.objective.quadratic(H)
    assert.is_nil(q0.wstar)
    assert.are.equal(0, q0.fstar)
  end)

  it("data fields: X, y, n, l2", function()
    local X, y = ms.tensor{{1, 2}, {3, 4}, {5, 6}}, ms.tensor{1, 0, 1}
    local ls = ms.objective.least_squares(X, y)
    assert.are.same(X:totable(), ls.X:totable())
    assert.are.same({1, 0, 1}, ls.y:totable())
    assert.are.equal(3, ls.n)
    assert.is_true(math.type(ls.n) == "integer")
    assert.is_nil(ls.l2)
    assert.is_nil(ls.H)
    local lg = ms.objective.logistic(X, y, 0.25)
    assert.are.same({1, 0, 1}, lg.y:totable()) -- the labels as given
    assert.are.equal(0.25, lg.l2)
    assert.are.equal(3, lg.n)
    assert.are.equal(0, ms.objective.logistic(X, y).l2)
  end)

  it("extra fields live on the objective; methods and built-in fields cannot be set", function()
    local q = ms.objective.quadratic(ms.eye(2))
    q._min_eig, q._max_eig = 1, 1
    q[1] = "one"
    assert.are.equal(1, q._min_eig)
    assert.are.equal("one", q[1])
    assert.is_nil(q.missing)
    q._min_eig = nil
    assert.is_nil(q._min_eig)
    local other = ms.objective.quadratic(ms.eye(2)) -- per objective
    assert.is_nil(other._max_eig)
    for _, k in ipairs{"value", "grad", "minibatch", "dim"} do
      local msg = raw_err(function() q[k] = 1 end)
      assert.truthy(msg:find(here, 1, true), msg)
      assert.are.equal(("objective: cannot set field '%s' (a method of objectives)"):format(k),
        msg:gsub("^[^\n:]+:%d+: ", "", 1))
    end
    for _, k in ipairs{"kind", "H", "wstar", "fstar", "X", "y", "n", "l2"} do
      assert.are.equal(("objective: cannot set field '%s' (a read-only field of objectives)"):format(k),
        err_of(function() q[k] = 1 end))
    end
    assert.are.same(ms.eye(2):totable(), q.H:totable())
    assert.truthy(err_of(function() q[nil] = 1 end):find("index is nil", 1, true))
  end)

  it("random_quadratic carries eigenvalues and Q; its numbers do not change", function()
    local q = ms.objective.random_quadratic{d = 4, eigenvalues = {1, 10}, seed = 7}
    assert.are.same({1, 4, 7, 10}, q.eigenvalues:totable())
    local H = ms.matmul(ms.matmul(q.Q, ms.diag(q.eigenvalues)), q.Q:t())
    assert.is_true(ms.max_abs_diff(H, q.H) < 1e-12)
    -- the same construction as the sampler always used
    local Q = ms.qr(ms.randn({4, 4}, {seed = 7}))
    local H2 = ms.matmul(ms.matmul(Q, ms.diag(ms.linspace(1, 10, 4))), Q:t())
    assert.are.equal(0, ms.max_abs_diff((H2 + H2:t()) * 0.5, q.H))
    local lam = q:eigh()
    assert_close(lam, {1, 4, 7, 10}, 1e-12, "eigh")
    assert.is_true(q:check_psd("here"))
    assert.are.equal("objective.random_quadratic: d must be a positive integer, got nil",
      err_of(ms.objective.random_quadratic, {}))
    local msg = raw_err(function() -- not a tail call: the caller's frame must exist
      local o = ms.objective.random_quadratic{d = 2, wstar = ms.zeros(3)}
      return o
    end)
    assert.truthy(msg:find(here, 1, true), msg)
    assert.truthy(msg:find("quadratic: wstar has shape [3], expected [2]", 1, true), msg)
  end)

  it("minibatch and grad_batch: the objective on rows (1-based, repeats allowed)", function()
    local Xt = ms.randn({6, 3}, {seed = 31}):totable()
    local yt = ms.randn({6}, {seed = 32}):totable()
    local ls = ms.objective.least_squares(ms.tensor(Xt), ms.tensor(yt))
    local w = ms.randn({3}, {seed = 33})
    local idx = {5, 1, 5, 6}
    local f0, g0 = ls_closed(Xt, yt, idx, w:totable())
    local mb = ls:minibatch(idx)
    assert.are.equal("least_squares", mb.kind)
    assert.are.equal(4, mb.n)
    assert_num(mb:value(w):item(), f0, 1e-12, "minibatch value")
    assert_close(mb:grad(w), g0, 1e-12, "minibatch grad")
    assert_close(ls:grad_batch(w, idx), g0, 1e-12, "grad_batch")
    -- differentiable in w: d/dw <grad_batch(w), v> = H_batch v = grad of <minibatch grad, v>
    local v = ms.tensor{1, -2, 0.5}
    assert_close(ms.grad(function(x) return ms.dot(ls:grad_batch(x, idx), v) end)(w),
      mb:hvp(w, v), 1e-12, "tape over grad_batch")
    -- logistic keeps l2
    local yb = {1, 0, 0, 1, 1, 0}
    local lg = ms.objective.logistic(ms.tensor(Xt), ms.tensor(yb), 0.3)
    local sub = lg:minibatch{2, 4}
    assert.are.equal(0.3, sub.l2)
    assert.are.same({0, 1}, sub.y:totable())
    local hand = ms.objective.logistic(ms.tensor{Xt[2], Xt[4]}, ms.tensor{0, 1}, 0.3)
    assert_close(lg:grad_batch(w, {2, 4}), hand:grad(w), 1e-14, "logistic grad_batch")
    assert_num(sub:value(w):item(), hand:value(w):item(), 1e-15, "logistic minibatch")
  end)

  it("minibatch and grad_batch errors", function()
    local ls = ms.objective.least_squares(ms.ones(5, 2), ms.zeros(5))
    local w = ms.zeros(2)
    assert.are.equal("bad argument #1 to 'minibatch' (entry 2: sample index 7 out of range [1, 5])",
      err_of(function() return ls:minibatch{1, 7} end))
    assert.are.equal("bad argument #1 to 'minibatch' (entry 1: sample index 0 out of range [1, 5])",
      err_of(function() return ls:minibatch{0} end))
    assert.are.equal("bad argument #1 to 'minibatch' (entry 2 must be an integer, got 1.5)",
      err_of(function() return ls:minibatch{1, 1.5} end))
    assert.are.equal("bad argument #1 to 'minibatch' (entry 1 must be an integer, got string)",
      err_of(function() return ls:minibatch{"a"} end))
    assert.are.equal("bad argument #1 to 'minibatch' (expected a non-empty table of sample indices)",
      err_of(function() return ls:minibatch{} end))
    assert.are.equal("bad argument #1 to 'minibatch' (table expected, got number)",
      err_of(function() return ls:minibatch(3) end))
    assert.are.equal("bad argument #2 to 'grad_batch' (entry 1: sample index 6 out of range [1, 5])",
      err_of(function() return ls:grad_batch(w, {6}) end))
    assert.are.equal("bad argument #1 to 'grad_batch' (tensor expected, got table)",
      err_of(function() return ls:grad_batch({1}, {1}) end))
    assert.are.equal("least_squares: w has shape [3], expected [2]",
      err_of(function() return ls:grad_batch(ms.zeros(3), {1}) end))
    local q = ms.objective.quadratic(ms.eye(2))
    local msg = raw_err(function() return q:minibatch{1} end)
    assert.truthy(msg:find(here, 1, true), msg)
    assert.are.equal("quadratic.minibatch: the objective has no samples (least squares and logistic have)",
      err_of(function() return q:minibatch{1} end))
    assert.are.equal("quadratic.grad_batch: the objective has no samples (least squares and logistic have)",
      err_of(function() return q:grad_batch(w, {1}) end))
  end)

  it("eigh and check_psd", function()
    local q = ms.objective.quadratic(ms.tensor{{1, 0}, {0, -3}})
    local lam, Q = q:eigh()
    assert.are.same({-3, 1}, lam:totable())
    assert.are.same({2, 2}, Q:shape())
    lam:fill(0) -- copies
    assert.are.same({-3, 1}, q:eigh():totable())
    assert.are.equal("meta: needs a positive semi-definite H (smallest eigenvalue -3, largest 1)",
      err_of(function() return q:check_psd("meta") end))
    assert.are.equal("check_psd: needs a positive semi-definite H (smallest eigenvalue -3, largest 1)",
      err_of(function() return q:check_psd() end))
    local ls = ms.objective.least_squares(ms.ones(2, 2), ms.zeros(2))
    assert.is_true(ls:check_psd("x"))
    assert.are.equal("quadratic_eigh: objective 'least_squares' is not a quadratic", err_of(function() return ls:eigh() end))
    local f = ms.objective.from_function(function(w) return ms.dot(w, w) end, {dim = 2, name = "mine"})
    assert.are.equal("x: needs a quadratic or least-squares objective, got mine", err_of(function() return f:check_psd("x") end))
  end)

  it("from_function: errors raised by the function reach the caller unchanged", function()
    local boom = {}
    local f = ms.objective.from_function(function() error(boom) end, {dim = 2, name = "b"})
    local ok, e = pcall(f.value, f, ms.zeros(2))
    assert.is_false(ok)
    assert.are.equal(boom, e)
    ok, e = pcall(f.grad, f, ms.zeros(2)) -- through the engine's derived gradient
    assert.is_false(ok)
    assert.are.equal(boom, e)
    local g = ms.objective.from_function(function(w) return ms.dot(w, w) end,
      {dim = 2, grad = function() error("grad failed", 0) end})
    assert.are.equal("grad failed", select(2, pcall(g.hvp, g, ms.zeros(2), ms.ones(2))))
    local vec = ms.objective.from_function(function(w) return w end, {dim = 2, name = "v"})
    assert.are.equal("v: the objective function must return a number or a one-element tensor, got shape [2]",
      err_of(vec.value, vec, ms.zeros(2)))
    -- a number is fine outside differentiation, refused inside
    local num = ms.objective.from_function(function(w) return w:sum():item() end, {dim = 2})
    assert.are.equal(3, num:value(ms.tensor{1, 2}):item())
    assert.truthy(select(2, pcall(num.grad, num, ms.ones(2))):find("returned a Lua number", 1, true))
    -- a given grad is used; hvp derived by forward mode over it
    local calls = 0
    local q = ms.objective.from_function(function(w) return ms.dot(w, w) end,
      {dim = 2, grad = function(w) calls = calls + 1 return w * 2 end})
    assert.are.same({2, 4}, q:hvp(ms.zeros(2), ms.tensor{1, 2}):totable())
    assert.is_true(calls > 0)
    assert.are.equal(0, ms.ad_depth())
  end)

  it("from_function and constructor errors are blamed on the caller", function()
    -- (non-tail calls: the caller's frame must exist to be blamed)
    local cases = {
      {function() local r = ms.objective.from_function(3) return r end,
        "objective.from_function: expected a function, got number"},
      {function() local r = ms.objective.from_function(print, {dim = 0}) return r end,
        "objective.from_function: option 'dim' must be a positive integer, got 0"},
      {function() local r = ms.objective.from_function(print, {dim = 2, name = 3}) return r end,
        "objective.from_function: option 'name' must be a string, got number"},
      {function() local r = ms.objective.from_function(print, {dim = 2, grad = 3}) return r end,
        "objective.from_function: option 'grad' must be a function, got number"},
      {function() local r = ms.objective.quadratic(ms.tensor{{1, 2}, {3, 4}}) return r end,
        "quadratic: H must be symmetric, got H[1,2] = 2 and H[2,1] = 3 (tolerance 1e-10 * max|H| = 4e-10)"},
      {function() local r = ms.objective.quadratic("H") return r end,
        "bad argument #1 to 'quadratic' (tensor expected, got string)"},
      {function() local r = ms.objective.least_squares(ms.zeros(3, 2), ms.zeros(2)) return r end,
        "least_squares: y has shape [2], expected [3] (one entry per row of X [3,2])"},
      {function() local r = ms.objective.logistic(ms.zeros(2, 2), ms.tensor{0, 2}) return r end,
        "logistic: y must hold labels 0 or 1, got y[2] = 2"},
      {function() local r = ms.objective.quadratic(ms.eye(2)):value("x") return r end,
        "bad argument #1 to 'value' (tensor expected, got string)"},
      {function() local r = ms.objective.quadratic(ms.eye(2)):hvp(ms.zeros(2)) return r end,
        "bad argument #2 to 'hvp' (tensor expected, got nil)"},
      {function() local r = ms.objective.quadratic(ms.eye(2)):grad(ms.zeros(3)) return r end,
        "quadratic: w has shape [3], expected [2]"},
    }
    for _, c in ipairs(cases) do
      local msg = raw_err(c[1])
      assert.truthy(msg:find(here, 1, true), msg)
      assert.are.equal(c[2], (msg:gsub("^[^\n:]+:%d+: ", "", 1)))
    end
  end)

  it("fields of a released objective", function()
    local q = ms.objective.quadratic(ms.eye(2))
    q.extra = 5
    getmetatable(q).__close(q)
    assert.are.equal("objective has been released (reading field 'kind')", err_of(function() return q.kind end))
    assert.are.equal(5, q.extra)
    assert.are.equal("function", type(q.value))
  end)

  it("tasks build objectives on their splits", function()
    local sample = ms.tasks.least_squares{d = 3, n_train = 4, n_valid = 2, n_test = 5, seed = 2}
    local t = sample()
    assert.are.equal("least_squares", t.objective.kind)
    assert.are.equal(4, t.objective.n)
    assert.are.equal(0, ms.max_abs_diff(t.objective.X, t.train.X))
    assert.are.equal(0, ms.max_abs_diff(t.valid_objective.y, t.valid.y))
    assert.are.equal(5, t.test_objective.n)
    local w = ms.randn({3}, {seed = 4})
    local f0 = ls_closed(t.train.X:totable(), t.train.y:totable(), {1, 2, 3, 4}, w:totable())
    assert_num(t.objective:value(w):item(), f0, 1e-12, "task objective")
    local qs = ms.tasks.quadratic{d = 3, eigenvalues = {1, 2}, seed = 1}()
    assert.are.equal("quadratic", qs.objective.kind)
    assert.are.same({1, 1.5, 2}, qs.objective.eigenvalues:totable())
  end)

  it("objectives with cached fields give their memory back", function()
    h.assert_no_leak(function()
      local q = ms.objective.random_quadratic{d = 5, seed = 1}
      local _, _, _ = q.H, q.wstar, q:eigh()
      local ls = ms.objective.least_squares(ms.ones(4, 5), ms.zeros(4))
      local _, _, _ = ls.X, ls.y, ls:minibatch{1, 2}:grad(ms.zeros(5))
      local f = ms.objective.from_function(function() error({}) end, {dim = 5})
      pcall(f.grad, f, ms.zeros(5))
    end)
  end)
end)
