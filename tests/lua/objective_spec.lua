-- Objectives through the Lua API (lua/src/lms_objective.c): the built-in quadratic,
-- least-squares and logistic objectives against closed forms computed here with plain
-- Lua arithmetic, gradients checked with check_grad (first order through :value,
-- second order through :grad), objectives whose callbacks are Lua functions (with grad
-- and hvp derived by the engine when absent), and the errors at the boundary.
local ms = require "metastep"

local function err_of(fn, ...)
  local ok, msg = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  msg = tostring(msg)
  return (msg:gsub("^[^\n:]+:%d+: ", "", 1))
end

local function assert_close(a, b, rtol, what)
  local ta = type(a) == "table" and a or a:totable()
  local tb = type(b) == "table" and b or b:totable()
  assert.are.equal(#tb, #ta, (what or "") .. ": length")
  local scale = 1
  for i = 1, #tb do scale = math.max(scale, math.abs(tb[i])) end
  for i = 1, #tb do
    assert.is_true(math.abs(ta[i] - tb[i]) <= rtol * scale,
      ("%s: element %d: %.17g vs %.17g"):format(what or "", i, ta[i], tb[i]))
  end
end

local function assert_num(a, b, rtol, what)
  assert.is_true(math.abs(a - b) <= rtol * math.max(1, math.abs(b)),
    ("%s: %.17g vs %.17g"):format(what or "", a, b))
end

local function assert_grad(what, f, x)
  local ok, err, report = ms.check_grad(f, x, {rtol = 1e-6})
  assert.is_true(ok, ("%s: %s (normalized error %g)"):format(what, report, err))
end

-- plain Lua linear algebra on nested tables
local function matvec(A, x)
  local r = {}
  for i = 1, #A do
    local s = 0
    for j = 1, #x do s = s + A[i][j] * x[j] end
    r[i] = s
  end
  return r
end

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
    local obj = ms.objective_quadratic(ms.tensor(H), {wstar = ms.tensor(ws), fstar = 0.5})
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
    local obj = ms.objective_quadratic(ms.tensor(H))
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
    local obj = ms.objective_quadratic(H, {wstar = ms.tensor{1, 1}, fstar = 2})
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
    local obj = ms.objective_least_squares(ms.tensor(X), ms.tensor(y))
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
      local obj = ms.objective_logistic(ms.tensor(X), ms.tensor(y), l2)
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
    local a = ms.objective_logistic(X, y)
    local b = ms.objective_logistic(X, y, 0)
    local w = ms.tensor{0.3, -0.7}
    assert.are.equal(b:value(w):item(), a:value(w):item())
    -- at w = 0 every example costs log 2
    assert_num(a:value(ms.zeros(2)):item(), math.log(2), 1e-15, "log 2")
  end)

  it("objectives give their memory back when collected", function()
    collectgarbage()
    collectgarbage()
    local before = ms.memory()
    do
      local X = ms.randn({50, 10}, {seed = 1})
      local y = ms.gt(ms.randn({50}, {seed = 2}), 0)
      local objs = {ms.objective_logistic(X, y, 0.1), ms.objective_least_squares(X, y),
                    ms.objective_quadratic(ms.eye(10))}
      for _, o in ipairs(objs) do o:hvp(ms.zeros(10), ms.ones(10)) end
      local cb = ms.objective_from_callbacks{dim = 10, value = function(w) return (w * w):sum() end}
      cb:hvp(ms.ones(10), ms.ones(10))
    end
    collectgarbage()
    collectgarbage()
    assert.are.equal(before, ms.memory())
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
    local obj = ms.objective_from_callbacks{name = "quartic", dim = 3, value = value}
    assert.are.equal("quartic", obj:name())
    assert.are.equal(3, obj:dim())
    check_objective("quartic (value only)", obj, w, v, closed(w, v))
  end)

  it("value and grad: hvp by forward mode over the Lua grad", function()
    local calls = 0
    local obj = ms.objective_from_callbacks{name = "quartic", dim = 3, value = value,
      grad = function(x) calls = calls + 1; return c * x ^ 3 + 1 end}
    check_objective("quartic (value, grad)", obj, w, v, closed(w, v))
    assert.is_true(calls > 0)
  end)

  it("a given hvp is used as it is", function()
    local obj = ms.objective_from_callbacks{dim = 3, value = value,
      hvp = function(x, u) return x * 0 + u * 10 end}
    assert.are.equal("objective", obj:name())
    assert.are.same({10, -5, 20}, obj:hvp(w, v):totable())
  end)

  it("a callback objective inside grad and through an unrolled loop", function()
    local obj = ms.objective_from_callbacks{dim = 3, value = value}
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
    local obj = ms.objective_from_callbacks{name = "boom", dim = 3,
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
    local vonly = ms.objective_from_callbacks{name = "boom2", dim = 3,
      value = function(x) local y = x * x; error({}) ; return y end}
    local msg3 = err_of(vonly.grad, vonly, w)
    assert.truthy(msg3:find("boom2: error in value: (error object is a table value)", 1, true), msg3)
    assert.are.equal(0, ms.ad_depth())
  end)

  it("callbacks returning the wrong thing are clear errors", function()
    local obj = ms.objective_from_callbacks{name = "bad", dim = 3,
      value = function(x) return x * 2 end,
      grad = function() return ms.zeros(2) end,
      hvp = function() return 1 end}
    assert.are.equal("bad: value returned shape [3], expected a scalar (0-d tensor)",
      err_of(obj.value, obj, w))
    assert.are.equal("bad: grad returned shape [2], expected [3]", err_of(obj.grad, obj, w))
    assert.are.equal("bad: hvp must return a tensor, got number", err_of(obj.hvp, obj, w, v))
    local nothing = ms.objective_from_callbacks{name = "nothing", dim = 3, value = function() end}
    assert.are.equal("nothing: value must return a tensor, got nil", err_of(nothing.value, nothing, w))
    assert.are.equal("nothing: value must return a tensor, got nil", err_of(nothing.grad, nothing, w))
    local num = ms.objective_from_callbacks{name = "num", dim = 3, value = function() return 3 end}
    assert.are.equal("num: value must return a tensor, got number", err_of(num.value, num, w))
    -- a one-element [1] result is accepted and handed out as 0-d
    local one = ms.objective_from_callbacks{dim = 3, value = function(x) return ms.dot(x, x):view(1) end}
    assert.are.same({}, one:value(w):shape())
    assert_close(one:grad(w), (w * 2):totable(), 1e-15, "grad of |w|^2")
  end)

  it("an objective closed inside its own callback finishes the call, then is released", function()
    local obj
    obj = ms.objective_from_callbacks{name = "selfclose", dim = 3, value = function(x)
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
  local q = ms.objective_quadratic(H)

  it("wrong types", function()
    assert.are.equal("bad argument #1 to 'value' (tensor expected, got string)", err_of(function() return q:value("x") end))
    assert.are.equal("bad argument #1 to 'grad' (tensor expected, got nil)", err_of(function() return q:grad() end))
    assert.are.equal("bad argument #2 to 'hvp' (tensor expected, got nil)",
      err_of(function() return q:hvp(ms.zeros(3), nil) end))
    assert.are.equal("bad argument #1 to 'value' (metastep.Objective expected, got table)",
      err_of(function() return q.value({}, ms.zeros(3)) end))
    assert.are.equal("bad argument #1 to 'objective_quadratic' (tensor expected, got string)",
      err_of(function() return ms.objective_quadratic("H") end))
    assert.are.equal("bad argument #2 to 'objective_quadratic' (table expected, got number)",
      err_of(function() return ms.objective_quadratic(H, 3) end))
    assert.are.equal("bad argument #2 to 'objective_quadratic' (field 'wstar' must be a tensor, got string)",
      err_of(function() return ms.objective_quadratic(H, {wstar = "w"}) end))
    assert.are.equal("bad argument #2 to 'objective_quadratic' (field 'fstar' must be a number, got table)",
      err_of(function() return ms.objective_quadratic(H, {fstar = {}}) end))
    assert.are.equal("bad argument #2 to 'objective_least_squares' (tensor expected, got nil)",
      err_of(function() return ms.objective_least_squares(H) end))
    assert.are.equal("bad argument #3 to 'objective_logistic' (number expected, got string)",
      err_of(function() return ms.objective_logistic(H, ms.zeros(3), "l2") end))
    assert.are.equal("bad argument #1 to 'objective_from_callbacks' (table expected, got function)",
      err_of(function() return ms.objective_from_callbacks(function() end) end))
    assert.are.equal("bad argument #1 to 'objective_from_callbacks' (field 'value' must be a function, got nil)",
      err_of(function() return ms.objective_from_callbacks({dim = 3}) end))
    assert.are.equal("bad argument #1 to 'objective_from_callbacks' (field 'grad' must be a function, got string)",
      err_of(function() return ms.objective_from_callbacks({dim = 3, value = print, grad = "g"}) end))
    assert.are.equal("bad argument #1 to 'objective_from_callbacks' (field 'dim' must be an integer >= 1, got nil)",
      err_of(function() return ms.objective_from_callbacks({value = print}) end))
    assert.are.equal("bad argument #1 to 'objective_from_callbacks' (field 'dim' must be an integer >= 1, got 0)",
      err_of(function() return ms.objective_from_callbacks({dim = 0, value = print}) end))
    assert.are.equal("bad argument #1 to 'objective_from_callbacks' (field 'dim' must be an integer >= 1, got 2.5)",
      err_of(function() return ms.objective_from_callbacks({dim = 2.5, value = print}) end))
    assert.are.equal("bad argument #1 to 'objective_from_callbacks' (field 'name' must be a string, got boolean)",
      err_of(function() return ms.objective_from_callbacks({dim = 1, value = print, name = true}) end))
  end)

  it("wrong shapes and values", function()
    assert.are.equal("quadratic: w has shape [5], expected [3]", err_of(q.value, q, ms.zeros(5)))
    assert.are.equal("quadratic: w has shape [3,1], expected [3]", err_of(q.grad, q, ms.zeros(3, 1)))
    assert.are.equal("quadratic: w has shape [], expected [3]", err_of(q.grad, q, ms.tensor(1)))
    assert.are.equal("quadratic: v has shape [2], expected [3]", err_of(q.hvp, q, ms.zeros(3), ms.zeros(2)))
    assert.are.equal("quadratic: H must be a square matrix [d,d], got shape [2,3]",
      err_of(ms.objective_quadratic, ms.zeros(2, 3)))
    assert.are.equal("quadratic: wstar has shape [2], expected [3] (H is [3,3])",
      err_of(ms.objective_quadratic, H, {wstar = ms.zeros(2)}))
    assert.are.equal("quadratic: fstar must be finite, got nan",
      err_of(ms.objective_quadratic, H, {fstar = 0 / 0}):gsub("%-nan", "nan"))
    assert.are.equal("quadratic: H must be symmetric, got H[0,1] = 1 and H[1,0] = 2 "
      .. "(0-based; tolerance 1e-10 * max|H| = 3e-10)",
      err_of(ms.objective_quadratic, ms.tensor{{1, 1}, {2, 3}}))
    assert.are.equal("least_squares: y has shape [2], expected [3] (one entry per row of X [3,2])",
      err_of(ms.objective_least_squares, ms.zeros(3, 2), ms.zeros(2)))
    assert.are.equal("logistic: y must hold labels 0 or 1, got y[1] = 2 (0-based)",
      err_of(ms.objective_logistic, ms.zeros(3, 2), ms.tensor{0, 2, 1}))
    assert.are.equal("logistic: l2 must be finite and >= 0, got -0.5",
      err_of(ms.objective_logistic, ms.zeros(3, 2), ms.tensor{0, 1, 1}, -0.5))
    assert.are.equal("quadratic_parts: objective 'least_squares' is not a quadratic",
      err_of(function()
        local o = ms.objective_least_squares(ms.zeros(3, 2), ms.zeros(3))
        return o:parts()
      end))
  end)

  it("released objectives and tensors", function()
    local o = ms.objective_quadratic(H)
    getmetatable(o).__close(o)
    getmetatable(o).__close(o) -- closing twice is harmless
    assert.are.equal("calling 'grad' on bad self (objective has been released)", err_of(function() return o:grad(ms.zeros(3)) end))
    assert.are.equal("calling 'dim' on bad self (objective has been released)", err_of(function() return o:dim() end))
    local t = ms.zeros(3)
    getmetatable(t).__close(t)
    assert.are.equal("bad argument #1 to 'value' (tensor has been released)", err_of(function() return q:value(t) end))
    assert.are.equal("bad argument #2 to 'objective_quadratic' (field 'wstar': tensor has been released)",
      err_of(function() return ms.objective_quadratic(H, {wstar = t}) end))
    do
      local closed <close> = ms.objective_quadratic(H)
      assert.are.equal(3, closed:dim())
    end
  end)
end)
