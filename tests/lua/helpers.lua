-- Helpers shared by the specs: load with
--   local h = dofile((debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "tests/lua") .. "/helpers.lua")
local ms = require "metastep"
local assert = require "luassert"

local M = {}

--- The message of the error fn(...) raises, without its "file:line: " position.
function M.err_of(fn, ...)
  local ok, msg = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return (tostring(msg):gsub("^[^\n:]+:%d+: ", "", 1))
end

--- |a - b| / |b| (b = 0 counts as 1e-300).
function M.rel(a, b) return math.abs(a - b) / math.max(math.abs(b), 1e-300) end

--- rel(a, b) <= tol, with the numbers in the failure message.
function M.assert_rel(a, b, tol, what)
  assert.is_true(M.rel(a, b) <= tol, ("%s: %.17g vs %.17g (rel %.3g)"):format(what or "", a, b, M.rel(a, b)))
end

--- |a - b| <= rtol * max(1, |b|) for numbers.
function M.assert_num(a, b, rtol, what)
  assert.is_true(math.abs(a - b) <= rtol * math.max(1, math.abs(b)),
    ("%s: %.17g vs %.17g"):format(what or "", a, b))
end

--- max |a - b| <= rtol * max(1, max |b|): two tensors of the same shape, or vectors given as
-- tensors or flat tables (element by element).
function M.assert_close(a, b, rtol, what)
  if ms.is_tensor(a) and ms.is_tensor(b) then
    assert.are.same(b:shape(), a:shape(), (what or "") .. " shape")
    local d = ms.max_abs_diff(a, b)
    local scale = math.max(1, ms.abs(b):max():item())
    assert.is_true(d <= rtol * scale,
      ("%s: max abs difference %.3g > %.3g (scale %.3g)"):format(what or "", d, rtol * scale, scale))
    return
  end
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

--- Plain Lua linear algebra on tables: a · b, and A x with A a table of rows.
function M.dot(a, b)
  local s = 0
  for i = 1, #a do s = s + a[i] * b[i] end
  return s
end

function M.matvec(A, x)
  local r = {}
  for i = 1, #A do r[i] = M.dot(A[i], x) end
  return r
end

--- A random nested table of the given shape, numbers uniform in [-scale, scale) from Lua's own
-- generator (seed it with math.randomseed).
function M.lua_random(shape, scale, depth)
  depth = depth or 1
  local t = {}
  for i = 1, shape[depth] do
    t[i] = depth == #shape and (math.random() * (2 * scale) - scale) or M.lua_random(shape, scale, depth + 1)
  end
  return t
end

--- A tensor that has been released (closed by its to-be-closed variable).
function M.released()
  local x
  do
    local y <close> = ms.zeros(2)
    x = y
  end
  return x
end

--- fn() must give back all the engine memory it took once its garbage is collected.
function M.assert_no_leak(fn)
  collectgarbage()
  collectgarbage()
  local before = ms.memory()
  fn()
  collectgarbage()
  collectgarbage()
  assert.are.equal(before, ms.memory())
end

local function isnan(x) return x ~= x end

--- Equal within a relative-plus-absolute tolerance; NaN equals NaN; infinities must match.
function M.same_number(e, a, tol)
  if isnan(e) then return isnan(a) end
  if e == a then return true end
  if e == math.huge or e == -math.huge then return false end
  return math.abs(e - a) <= tol * (1 + math.abs(e))
end

--- Nested number tables equal by same_number, element by element (path names the element).
function M.assert_nested_close(expected, actual, tol, path)
  path = path or ""
  if type(expected) == "number" then
    assert.is_number(actual, path)
    assert.is_true(M.same_number(expected, actual, tol or 0),
      ("%s: expected %.17g, got %.17g"):format(path, expected, actual))
    return
  end
  assert.is_table(actual, path)
  assert.are.equal(#expected, #actual, path .. " length")
  for i = 1, #expected do M.assert_nested_close(expected[i], actual[i], tol, path .. "[" .. i .. "]") end
end

return M
