-- The boundary: for every binding, a wrong-type call and (where shapes apply) a
-- wrong-shape call, each with the exact message expected. Messages name the function,
-- the argument and the expected vs actual type, shape or value.
--
-- Each case is {binding, kind, source, message}; the source runs as
-- `local ms, t, m = ...; return <source>` so Lua sees a call by the binding's own name.
-- assert.has_error strips the "chunk:line: " position prefix before comparing.
local ms = require "metastep"

local cases = {
  -- constructors
  {"tensor", "type", "ms.tensor(true)", "bad argument #1 to 'tensor' (table, number or tensor expected, got boolean)"},
  {"tensor", "type", "ms.tensor{{1, 'x'}}", "tensor: expected a number at [1][2], got string"},
  {"tensor", "shape", "ms.tensor{{1, 2}, {3}}", "tensor: ragged nested table: [2] has 1 elements, expected 2"},
  {"zeros", "type", "ms.zeros('a')", "bad argument #1 to 'zeros' (shape (table of sizes or sizes) expected, got string)"},
  {"zeros", "type", "ms.zeros{2, 'a'}", "bad argument #1 to 'zeros' (shape entry 2 must be an integer, got string)"},
  {"zeros", "type", "ms.zeros(2.5)", "bad argument #1 to 'zeros' (number has no integer representation)"},
  {"zeros", "shape", "ms.zeros{-1}", "bad argument #1 to 'zeros' (shape entry 1 must be >= 0, got -1)"},
  {"zeros", "shape", "ms.zeros{1, 1, 1, 1, 1, 1, 1, 1, 1}", "bad argument #1 to 'zeros' (at most 8 dimensions, got 9)"},
  {"ones", "type", "ms.ones(true)", "bad argument #1 to 'ones' (shape (table of sizes or sizes) expected, got boolean)"},
  {"ones", "shape", "ms.ones(2, -1)", "bad argument #2 to 'ones' (size must be >= 0, got -1)"},
  {"full", "type", "ms.full(2, 1)", "bad argument #1 to 'full' (table expected, got number)"},
  {"full", "type", "ms.full({2}, 'x')", "bad argument #2 to 'full' (number expected, got string)"},
  {"full", "shape", "ms.full({2, -3}, 1)", "bad argument #1 to 'full' (shape entry 2 must be >= 0, got -3)"},
  {"eye", "type", "ms.eye('a')", "bad argument #1 to 'eye' (number expected, got string)"},
  {"eye", "shape", "ms.eye(-1)", "bad argument #1 to 'eye' (size must be >= 0, got -1)"},
  {"eye", "shape", "ms.eye(2, -4)", "bad argument #2 to 'eye' (size must be >= 0, got -4)"},
  {"diag", "type", "ms.diag(1)", "bad argument #1 to 'diag' (tensor expected, got number)"},
  {"diag", "shape", "ms.diag(ms.zeros(2, 2, 2))", "diag: expected a vector or a matrix, got shape [2,2,2]"},
  {"diag", "shape", "m:diag()", "diag: expected a vector or a matrix, got shape []"},
  {"arange", "type", "ms.arange('a')", "bad argument #1 to 'arange' (number expected, got string)"},
  {"arange", "value", "ms.arange(0, 1, 0)", "arange: step must be nonzero"},
  {"arange", "value", "ms.arange(0, math.huge)", "arange: start, stop and step must be finite (got 0, inf, 1)"},
  {"linspace", "type", "ms.linspace(0, 1, 'a')", "bad argument #3 to 'linspace' (number expected, got string)"},
  {"linspace", "shape", "ms.linspace(0, 1, 0)", "bad argument #3 to 'linspace' (count must be >= 1, got 0)"},
  {"rand", "type", "ms.rand(3)", "bad argument #1 to 'rand' (shape table expected, got number)"},
  {"rand", "type", "ms.rand({2}, 5)", "bad argument #2 to 'rand' (table expected, got number)"},
  {"rand", "type", "ms.rand({2}, {lo = 'a'})", "bad argument #2 to 'rand' (field 'lo' must be a number, got string)"},
  {"rand", "shape", "ms.rand{-1}", "bad argument #1 to 'rand' (shape entry 1 must be >= 0, got -1)"},
  {"rand", "value", "ms.rand({2}, {lo = 2, hi = 1})", "rand: expected finite lo <= hi, got [2, 1)"},
  {"randn", "type", "ms.randn('a')", "bad argument #1 to 'randn' (shape table expected, got string)"},
  {"randn", "type", "ms.randn({2}, {seed = 1.5})", "bad argument #2 to 'randn' (field 'seed' must be an integer, got number)"},
  {"randn", "shape", "ms.randn{2, 'x'}", "bad argument #1 to 'randn' (shape entry 2 must be an integer, got string)"},
  {"randn", "value", "ms.randn({2}, {std = -1})", "randn: expected finite mean and std >= 0, got 0 and -1"},
  {"seed", "type", "ms.seed('a')", "bad argument #1 to 'seed' (number expected, got string)"},
  {"seed", "type", "ms.seed(1.5)", "bad argument #1 to 'seed' (number has no integer representation)"},
  {"cat", "type", "ms.cat(1)", "bad argument #1 to 'cat' (table expected, got number)"},
  {"cat", "type", "ms.cat{ms.zeros(2), 1}", "bad argument #1 to 'cat' (element 2 must be a tensor, got number)"},
  {"cat", "type", "ms.cat({ms.zeros(2)}, 'x')", "bad argument #2 to 'cat' (number expected, got string)"},
  {"cat", "shape", "ms.cat{}", "bad argument #1 to 'cat' (expected a non-empty table of tensors, got 0 elements)"},
  {"cat", "shape", "ms.cat{ms.zeros(2), ms.zeros(2, 2)}", "cat: tensor 2 has shape [2,2], incompatible with [2]"},
  {"cat", "shape", "ms.cat({ms.zeros(2, 3), ms.zeros(2, 4)}, 1)", "cat: tensor 2 has shape [2,4], incompatible with [2,3]"},
  {"cat", "shape", "ms.cat({ms.zeros(2)}, 2)", "bad argument #2 to 'cat' (dimension 2 out of range for 1-d tensor)"},
  {"cat", "shape", "ms.cat{m, m}", "cat: cannot concatenate 0-d tensors"},
  -- element-wise helpers
  {"where", "type", "ms.where('a', 1, 2)", "bad argument #1 to 'where' (tensor or number expected, got string)"},
  {"where", "type", "t:where(1, {})", "bad argument #2 to 'where' (tensor or number expected, got table)"},
  {"where", "shape", "ms.where(ms.zeros(2), ms.zeros(3), 1)", "where: shapes [2], [3] and [] do not broadcast"},
  {"clamp", "type", "ms.clamp('a')", "bad argument #1 to 'clamp' (tensor expected, got string)"},
  {"clamp", "type", "t:clamp('a')", "bad argument #1 to 'clamp' (number expected, got string)"},
  {"clamp", "value", "ms.clamp(t, 2, 1)", "clamp: lo (2) must be <= hi (1)"},
  {"all_finite", "type", "ms.all_finite(1)", "bad argument #1 to 'all_finite' (tensor expected, got number)"},
  {"all_finite", "type", "ms.Tensor.all_finite('x')", "bad argument #1 to 'all_finite' (tensor expected, got string)"},
  {"max_abs_diff", "type", "ms.max_abs_diff(t, 1)", "bad argument #2 to 'max_abs_diff' (tensor expected, got number)"},
  {"max_abs_diff", "shape", "ms.max_abs_diff(ms.zeros(2), ms.zeros(3))", "max_abs_diff: shapes [2] and [3] do not broadcast"},
  -- linear algebra
  {"dot", "type", "ms.dot(t, 1)", "bad argument #2 to 'dot' (tensor expected, got number)"},
  {"dot", "shape", "ms.dot(ms.zeros(2), ms.zeros(3))", "dot: shapes [2] and [3] are not aligned (2 != 3)"},
  {"dot", "shape", "t:dot(ms.zeros(2, 2))", "dot: expected two vectors, got [2] and [2,2]"},
  {"matvec", "type", "ms.matvec('a', t)", "bad argument #1 to 'matvec' (tensor expected, got string)"},
  {"matvec", "shape", "ms.matvec(ms.zeros(2, 2), ms.zeros(3))", "matvec: shapes [2,2] and [3] are not aligned (2 != 3)"},
  {"matvec", "shape", "ms.matvec(ms.zeros(2), ms.zeros(3))", "matvec: expected a matrix and a vector, got [2] and [3]"},
  {"matmul", "type", "ms.matmul(t, {})", "bad argument #2 to 'matmul' (tensor expected, got table)"},
  {"matmul", "shape", "ms.matmul(ms.zeros(2, 3), ms.zeros(2, 3))", "matmul: shapes [2,3] and [2,3] are not aligned (3 != 2)"},
  {"matmul", "shape", "t:matmul(ms.zeros(2, 2, 2))", "matmul: expected 1-D or 2-D operands, got shapes [2] and [2,2,2]"},
  {"outer", "type", "ms.outer(nil, t)", "bad argument #1 to 'outer' (tensor expected, got nil)"},
  {"outer", "shape", "ms.outer(ms.zeros(2, 2), ms.zeros(3))", "outer: expected two vectors, got [2,2] and [3]"},
  {"solve", "type", "ms.solve('a', t)", "bad argument #1 to 'solve' (tensor expected, got string)"},
  {"solve", "shape", "ms.solve(ms.zeros(2, 3), ms.zeros(3))", "solve: expected a square matrix, got [2,3]"},
  {"solve", "shape", "ms.solve(ms.eye(2), ms.zeros(3))", "solve: shapes [2,2] and [3] are not aligned (2 != 3)"},
  {"solve", "shape", "ms.solve(ms.eye(2), m)", "solve: right-hand side must be 1-D or 2-D, got shapes [2,2] and []"},
  {"solve", "value", "ms.solve(ms.tensor{{1, 2}, {2, 4}}, ms.zeros(2))", "solve: matrix is singular (U[2,2] = 0)"},
  {"cholesky", "type", "ms.cholesky(2)", "bad argument #1 to 'cholesky' (tensor expected, got number)"},
  {"cholesky", "shape", "ms.cholesky(ms.zeros(2, 3))", "cholesky: expected a square matrix, got [2,3]"},
  {"inv", "type", "ms.inv(true)", "bad argument #1 to 'inv' (tensor expected, got boolean)"},
  {"inv", "shape", "ms.inv(ms.zeros(2))", "inv: expected a square matrix, got [2]"},
  {"inv", "value", "ms.inv(ms.tensor{{1, 2}, {2, 4}})", "inv: matrix is singular (U[2,2] = 0)"},
  {"det", "type", "ms.det()", "bad argument #1 to 'det' (tensor expected, got nil)"},
  {"det", "shape", "ms.det(ms.zeros(2, 3))", "det: expected a square matrix, got [2,3]"},
  {"eigh", "type", "ms.eigh(1)", "bad argument #1 to 'eigh' (tensor expected, got number)"},
  {"eigh", "shape", "ms.eigh(ms.zeros(2, 3))", "eigh: expected a square matrix, got [2,3]"},
  {"qr", "type", "ms.qr('a')", "bad argument #1 to 'qr' (tensor expected, got string)"},
  {"qr", "shape", "ms.qr(ms.zeros(2))", "qr: expected a matrix, got [2]"},
  -- memory
  {"set_memory_limit", "type", "ms.set_memory_limit('a')", "bad argument #1 to 'set_memory_limit' (number expected, got string)"},
  {"set_memory_limit", "value", "ms.set_memory_limit(-1)", "bad argument #1 to 'set_memory_limit' (limit must be >= 0 bytes (0 = unlimited))"},
  -- methods: inspection
  {"shape", "type", "ms.Tensor.shape(1)", "bad argument #1 to 'shape' (tensor expected, got number)"},
  {"size", "type", "t:size('a')", "bad argument #1 to 'size' (number expected, got string)"},
  {"size", "shape", "t:size(2)", "bad argument #1 to 'size' (dimension 2 out of range for 1-d tensor)"},
  {"numel", "type", "ms.Tensor.numel({})", "bad argument #1 to 'numel' (tensor expected, got table)"},
  {"ndim", "type", "ms.Tensor.ndim('x')", "bad argument #1 to 'ndim' (tensor expected, got string)"},
  {"is_contiguous", "type", "ms.Tensor.is_contiguous(1)", "bad argument #1 to 'is_contiguous' (tensor expected, got number)"},
  {"shares_storage", "type", "t:shares_storage(1)", "bad argument #1 to 'shares_storage' (tensor expected, got number)"},
  {"version", "type", "ms.Tensor.version(nil)", "bad argument #1 to 'version' (tensor expected, got nil)"},
  {"item", "type", "ms.Tensor.item(1)", "bad argument #1 to 'item' (tensor expected, got number)"},
  {"item", "shape", "t:item()", "item: expected a tensor with one element, got shape [2]"},
  {"totable", "type", "ms.Tensor.totable({})", "bad argument #1 to 'totable' (tensor expected, got table)"},
  {"tostring", "type", "ms.Tensor.tostring(1)", "bad argument #1 to 'tostring' (tensor expected, got number)"},
  {"tostring", "type", "t:tostring('a')", "bad argument #1 to 'tostring' (number expected, got string)"},
  -- methods: copies and views
  {"clone", "type", "ms.Tensor.clone(1)", "bad argument #1 to 'clone' (tensor expected, got number)"},
  {"contiguous", "type", "ms.Tensor.contiguous('x')", "bad argument #1 to 'contiguous' (tensor expected, got string)"},
  {"view", "type", "t:view('a')", "bad argument #1 to 'view' (number expected, got string)"},
  {"view", "type", "t:view{'a'}", "bad argument #1 to 'view' (shape entry 1 must be an integer, got string)"},
  {"view", "shape", "t:view(3)", "view: cannot reshape [2] (2 elements) to [3]"},
  {"view", "shape", "t:view(-2)", "view: invalid size -2 in shape [-2]"},
  {"view", "shape", "ms.zeros(2, 2):t():view(4)", "view: tensor of shape [2,2] is not contiguous (use reshape, which copies)"},
  {"reshape", "type", "t:reshape{2, true}", "bad argument #1 to 'reshape' (shape entry 2 must be an integer, got boolean)"},
  {"reshape", "shape", "t:reshape{3}", "reshape: cannot reshape [2] (2 elements) to [3]"},
  {"reshape", "shape", "t:reshape{-1, 3}", "reshape: cannot infer -1 in [-1,3] for 2 elements"},
  {"reshape", "shape", "t:reshape(1, 1, 1, 1, 1, 1, 1, 1, 2)", "bad argument #9 to 'reshape' (at most 8 dimensions, got 9)"},
  {"flatten", "type", "ms.Tensor.flatten(1)", "bad argument #1 to 'flatten' (tensor expected, got number)"},
  {"transpose", "type", "ms.zeros(2, 2):transpose('a', 1)", "bad argument #1 to 'transpose' (number expected, got string)"},
  {"transpose", "shape", "t:transpose()", "bad argument #1 to 'transpose' (dimensions required for a 1-d tensor)"},
  {"transpose", "shape", "ms.zeros(2, 2):transpose(1, 3)", "bad argument #2 to 'transpose' (dimension 3 out of range for 2-d tensor)"},
  {"t", "type", "ms.Tensor.t(1)", "bad argument #1 to 't' (tensor expected, got number)"},
  {"t", "shape", "ms.zeros(2, 2, 2):t()", "bad argument #1 to 't' (dimensions required for a 3-d tensor)"},
  {"permute", "type", "ms.zeros(2, 2):permute(1)", "bad argument #1 to 'permute' (table expected, got number)"},
  {"permute", "type", "ms.zeros(2, 2):permute{1, 'a'}", "bad argument #1 to 'permute' (entry 2 must be an integer, got string)"},
  {"permute", "shape", "t:permute{1, 2}", "bad argument #1 to 'permute' (expected 1 dimensions, got 2)"},
  {"permute", "shape", "ms.zeros(2, 2):permute{1, 1}", "bad argument #1 to 'permute' (entry 2: dimension 1 repeated)"},
  {"permute", "shape", "ms.zeros(2, 2):permute{1, 3}", "bad argument #1 to 'permute' (entry 2: dimension 3 out of range for 2-d tensor)"},
  {"slice", "type", "t:slice('a')", "bad argument #1 to 'slice' (number expected, got string)"},
  {"slice", "type", "t:slice(1, 1, 2, 1.5)", "bad argument #4 to 'slice' (number has no integer representation)"},
  {"slice", "shape", "t:slice(2)", "bad argument #1 to 'slice' (dimension 2 out of range for 1-d tensor)"},
  {"slice", "shape", "t:slice(1, 4)", "bad argument #2 to 'slice' (start 4 out of range for size 2)"},
  {"slice", "shape", "t:slice(1, 1, 5)", "bad argument #3 to 'slice' (end 5 out of range for start 1 and size 2)"},
  {"slice", "shape", "t:slice(1, 1, 2, 0)", "bad argument #4 to 'slice' (step must be >= 1, got 0)"},
  {"select", "type", "t:select(1, 'a')", "bad argument #2 to 'select' (number expected, got string)"},
  {"select", "shape", "t:select(1, 3)", "bad argument #2 to 'select' (index 3 out of range for size 2)"},
  {"select", "shape", "m:select(1, 1)", "bad argument #1 to 'select' (dimension 1 out of range for 0-d tensor)"},
  {"expand", "type", "t:expand('a')", "bad argument #1 to 'expand' (shape (table of sizes or sizes) expected, got string)"},
  {"expand", "shape", "t:expand{3}", "expand: cannot broadcast [2] to [3]"},
  {"expand", "shape", "t:expand{-1}", "bad argument #1 to 'expand' (shape entry 1 must be >= 0, got -1)"},
  -- methods: in place
  {"fill", "type", "t:fill('a')", "bad argument #1 to 'fill' (number expected, got string)"},
  {"assign", "type", "t:assign(1)", "bad argument #1 to 'assign' (tensor expected, got number)"},
  {"assign", "shape", "t:assign(ms.zeros(3))", "assign: cannot broadcast source of shape [3] to destination of shape [2]"},
  -- metamethods
  {"__index", "type", "t[true]", "index: expected an integer, a table of integers or a method name, got boolean"},
  {"__index", "shape", "t[3]", "index: 3 out of range for dimension 1 of size 2"},
  {"__index", "shape", "t[{1, 1}]", "index: 2 indices for a 1-d tensor"},
  {"__newindex", "type", "(function() t[1] = 'a' end)()", "index assignment: expected a number or a tensor, got string"},
  {"__newindex", "shape", "(function() ms.zeros(2, 2)[1] = ms.zeros(3) end)()",
    "index assignment: cannot broadcast source of shape [3] to destination of shape [2]"},
  {"__len", "type", "getmetatable(t).__len(1)", "bad argument #1 to '__len' (tensor expected, got number)"},
  {"__len", "shape", "#m", "len: a 0-d tensor has no length"},
  {"__lt", "type", "ms.zeros(1) < 'x'", "bad argument #2 to 'lt' (tensor or number expected, got string)"},
  {"__lt", "shape", "t < 1", "<: comparison operators need one-element tensors, got shape [2] (use ms.lt for element-wise)"},
  {"__le", "type", "ms.zeros(1) <= {}", "bad argument #2 to 'le' (tensor or number expected, got table)"},
  {"__le", "shape", "1 <= t", "<=: comparison operators need one-element tensors, got shape [2] (use ms.le for element-wise)"},
  {"__unm", "type", "getmetatable(t).__unm('x')", "bad argument #1 to '__unm' (tensor expected, got string)"},
  {"__tostring", "type", "getmetatable(t).__tostring(1)", "bad argument #1 to '__tostring' (tensor expected, got number)"},
  {"__add", "type", "t + 'x'", "bad argument #2 to 'add' (tensor or number expected, got string)"},
  {"__add", "shape", "t + ms.zeros(3)", "add: shapes [2] and [3] do not broadcast"},
  {"__sub", "type", "{} - t", "bad argument #1 to 'sub' (tensor or number expected, got table)"},
  {"__sub", "shape", "t - ms.zeros(3)", "sub: shapes [2] and [3] do not broadcast"},
  {"__mul", "type", "t * true", "bad argument #2 to 'mul' (tensor or number expected, got boolean)"},
  {"__mul", "shape", "ms.zeros(3, 2) * t:view(2, 1)", "mul: shapes [3,2] and [2,1] do not broadcast"},
  {"__div", "type", "t / print", "bad argument #2 to 'div' (tensor or number expected, got function)"},
  {"__div", "shape", "ms.zeros(4) / t", "div: shapes [4] and [2] do not broadcast"},
  {"__pow", "type", "t ^ {}", "bad argument #2 to 'pow' (tensor or number expected, got table)"},
  {"__pow", "shape", "t ^ ms.zeros(3)", "pow: shapes [2] and [3] do not broadcast"},
}

local binops = {"add", "sub", "mul", "div", "pow", "maximum", "minimum", "atan2", "lt", "le", "gt", "ge", "eq", "ne"}
local unops = {"neg", "abs", "exp", "log", "log1p", "expm1", "sqrt", "square", "reciprocal", "tanh",
  "sigmoid", "relu", "softplus", "sin", "cos", "sign", "floor", "ceil", "round", "isfinite"}
local redops = {"sum", "mean", "max", "min", "prod", "norm", "argmax", "argmin", "logsumexp"}

for _, op in ipairs(binops) do
  local f = "bad argument #%d to '" .. op .. "' (tensor or number expected, got %s)"
  cases[#cases + 1] = {op, "type", ("ms.%s('x', 1)"):format(op), f:format(1, "string")}
  cases[#cases + 1] = {op, "type", ("ms.%s(1, {})"):format(op), f:format(2, "table")}
  cases[#cases + 1] = {op, "type", ("t:%s()"):format(op), f:format(1, "nil")}
  cases[#cases + 1] = {op, "shape", ("ms.%s(ms.zeros(3), ms.zeros(4))"):format(op),
    op .. ": shapes [3] and [4] do not broadcast"}
  cases[#cases + 1] = {op, "shape", ("t:%s(ms.zeros(2, 3))"):format(op), op .. ": shapes [2] and [2,3] do not broadcast"}
end

-- Unary ops take any shape: only the argument type can be wrong.
for _, op in ipairs(unops) do
  cases[#cases + 1] = {op, "type", ("ms.%s('x')"):format(op),
    ("bad argument #1 to '%s' (tensor or number expected, got string)"):format(op)}
  cases[#cases + 1] = {op, "type", ("ms.Tensor.%s({})"):format(op),
    ("bad argument #1 to '%s' (tensor or number expected, got table)"):format(op)}
end

for _, op in ipairs(redops) do
  cases[#cases + 1] = {op, "type", ("ms.%s('x')"):format(op), ("bad argument #1 to '%s' (tensor expected, got string)"):format(op)}
  cases[#cases + 1] = {op, "type", ("ms.%s(t, 'a')"):format(op), ("bad argument #2 to '%s' (number expected, got string)"):format(op)}
  cases[#cases + 1] = {op, "shape", ("ms.%s(t, 2)"):format(op),
    ("bad argument #2 to '%s' (dimension 2 out of range for 1-d tensor)"):format(op)}
  cases[#cases + 1] = {op, "shape", ("t:%s(-2)"):format(op),
    ("bad argument #1 to '%s' (dimension -2 out of range for 1-d tensor)"):format(op)}
  cases[#cases + 1] = {op, "shape", ("m:%s(1)"):format(op),
    ("bad argument #1 to '%s' (dimension 1 out of range for 0-d tensor)"):format(op)}
end
for _, op in ipairs{"max", "min", "argmax", "argmin"} do
  cases[#cases + 1] = {op, "shape", ("ms.%s(ms.zeros(0))"):format(op), op .. ": cannot reduce empty tensor of shape [0]"}
  cases[#cases + 1] = {op, "shape", ("ms.%s(ms.zeros(2, 0), 2)"):format(op),
    op .. ": cannot reduce empty axis 2 of shape [2,0]"}
end

local function run(src)
  local chunk = assert(load("local ms, t, m = ...; return " .. src, "=case"))
  return function() return chunk(ms, ms.zeros(2), ms.tensor(5)) end
end

describe("error messages", function()
  for _, c in ipairs(cases) do
    local _, kind, src, msg = c[1], c[2], c[3], c[4]
    it(kind .. ": " .. src, function()
      assert.has_error(run(src), msg)
    end)
  end
end)

describe("error coverage", function()
  -- Every binding of lms_tensor.c, by name; metamethods by event.
  local bindings = {
    "tensor", "zeros", "ones", "full", "eye", "diag", "arange", "linspace", "rand", "randn", "cat",
    "where", "clamp", "all_finite", "max_abs_diff", "dot", "matvec", "matmul", "outer", "solve",
    "cholesky", "inv", "det", "eigh", "qr", "seed", "set_memory_limit",
    "shape", "size", "numel", "ndim", "is_contiguous", "shares_storage", "version", "item", "totable",
    "clone", "contiguous", "view", "reshape", "flatten", "transpose", "t", "permute", "slice", "select",
    "expand", "fill", "assign", "tostring",
    "__index", "__newindex", "__len", "__lt", "__le", "__unm", "__tostring",
    "__add", "__sub", "__mul", "__div", "__pow",
  }
  for _, list in ipairs{binops, unops, redops} do
    for _, op in ipairs(list) do bindings[#bindings + 1] = op end
  end
  -- Bindings where no shape can be wrong (any shape is valid, or there is no tensor).
  local shapeless = {
    tensor = false, seed = true, set_memory_limit = true, all_finite = true, numel = true, ndim = true,
    is_contiguous = true, shares_storage = true, version = true, totable = true, tostring = true,
    clone = true, contiguous = true, flatten = true, fill = true, __unm = true, __tostring = true,
    clamp = true, rand = false, arange = true, shape = true,
  }
  for _, op in ipairs(unops) do shapeless[op] = true end

  it("has a wrong-type case for every binding and a wrong-shape case where shapes apply", function()
    local have = {}
    for _, c in ipairs(cases) do
      have[c[1]] = have[c[1]] or {}
      have[c[1]][c[2]] = true
    end
    for _, name in ipairs(bindings) do
      if name:sub(1, 2) ~= "__" then
        assert.is_true(type(ms[name]) == "function" or type(ms.Tensor[name]) == "function", name .. " is not a binding")
      end
      assert.is_truthy(have[name] and have[name].type, "no wrong-type case for " .. name)
      if not shapeless[name] then
        assert.is_truthy(have[name] and have[name].shape, "no wrong-shape case for " .. name)
      end
    end
  end)

  it("memory ignores arguments and returns bytes and limit", function()
    local bytes, limit = ms.memory("ignored", {})
    assert.is_true(math.type(bytes) == "integer" and bytes >= 0)
    assert.are.equal(0, limit)
  end)
end)
