---@meta metastep
-- luacheck: ignore
--- The documentation of metastep's public Lua API, in the Lua language server's annotations
-- (LuaLS reads this file as a definition file: completion, hover and type checks in an editor).
-- It is also the one source of `help(f)` at the metastep prompt: lua/metastep/help.lua parses
-- these comments at run time (the file is embedded in the module with the front library).
--
-- Adding a public function: add a block of the shape below under its module's heading, with a
-- description, an example (`---Example: \`code\`` or a ```lua fence), one `---@param name type
-- description` per parameter (`name?` when optional; an options table gets a `---@class` with
-- one `---@field name? type description (default ...)` per option) and `---@return` lines.
-- tests/lua/doc_spec.lua walks `require "metastep"` and fails naming every function that has
-- no entry here, or whose entry leaves a parameter unnamed or untyped.
--
-- Names: `function ms.x(...)` documents ms.x; `function Tensor:x(...)` documents the tensor
-- method t:x(...) (ms.Tensor.x); `function Objective:x(...)` documents obj:x(...). A function
-- reachable under several names (ms.grad is ms.autodiff.grad, t:abs() is ms.abs) is documented
-- once; help shows the other names.

---@class Tensor A dense tensor of doubles (userdata). Arithmetic operators, `#t`, `t[i]`, `t[{i, j}]`.
local Tensor = {}

---@class Objective An objective f(w) with its gradient and Hessian-vector products (userdata).
---@field kind string "quadratic", "least_squares", "logistic" or "function"
---@field H Tensor the Hessian of a quadratic (a copy)
---@field X Tensor the inputs of least squares and logistic regression
---@field y Tensor the targets
---@field n integer the number of samples
local Objective = {}

---@class metastep The module: `local ms = require "metastep"` (the global `ms` at the prompt).
---@field version string the version, "0.2.0"
local ms = {}
ms.autodiff = {}
ms.objective = {}
ms.objective.tasks = {}
ms.tasks = ms.objective.tasks
ms.optim = {}
ms.meta = {}
ms.plot = {}
ms.linalg = {}
ms.nn = {}
ms.data = {}

---@alias shape integer[] a shape such as {2, 3}; constructors also take the sizes as separate integers
---@alias tensorish Tensor|number a tensor, or a number (a 0-d tensor)

-- ============================================================ constructors

---A new tensor from a number (0-d) or a nested table of numbers (rectangular),
---or a copy of a tensor.
---
---Example: `ms.tensor{{1, 2}, {3, 4}}`
---@param data number|table|Tensor the values, e.g. {{1, 2}, {3, 4}}
---@return Tensor a new tensor
function ms.tensor(data) end

---A new tensor of zeros.
---
---Example: `ms.zeros{2, 3}`
---@param shape shape the sizes, a table {2, 3} or integers 2, 3
---@return Tensor a new tensor
function ms.zeros(shape) end

---A new tensor of ones.
---
---Example: `ms.ones{2, 3}`
---@param shape shape the sizes, a table {2, 3} or integers 2, 3
---@return Tensor a new tensor
function ms.ones(shape) end

---A new tensor with every element equal to value.
---
---Example: `ms.full({3}, 0.1)`
---@param shape shape the sizes, a table such as {2, 3}
---@param value number the fill value
---@return Tensor a new tensor
function ms.full(shape, value) end

---The n x m identity matrix (ones on the diagonal).
---
---Example: `ms.eye(3)`
---@param n integer rows
---@param m? integer columns (default: n)
---@return Tensor a new [n, m] tensor
function ms.eye(n, m) end

---diag of a vector: the square matrix with x on its diagonal; of a matrix: its diagonal.
---Method form: t:diag().
---
---Example: `ms.diag(ms.tensor{1, 2})`
---@param x Tensor a vector [n] or a matrix [n, m]
---@return Tensor a new tensor
function ms.diag(x) end

---Numbers from start up to stop (excluded) by step, as NumPy's arange;
---arange(n) is 0, 1, ..., n - 1.
---
---Example: `ms.arange(1, 5) -- 1, 2, 3, 4`
---@param start number first value (or the end n when it is the only argument)
---@param stop? number end, excluded
---@param step? number increment (default: 1)
---@return Tensor a new vector
function ms.arange(start, stop, step) end

---n evenly spaced numbers from a to b, both included.
---
---Example: `ms.linspace(0, 1, 5)`
---@param a number first value
---@param b number last value
---@param n integer count, >= 1
---@return Tensor a new vector [n]
function ms.linspace(a, b, n) end

---@class metastep.RandOptions
---@field seed? integer a fresh generator with this seed (default: the context's generator)
---@field lo? number lower bound (default 0)
---@field hi? number upper bound (default 1)
local RandOptions = {}

---@class metastep.RandnOptions
---@field seed? integer a fresh generator with this seed (default: the context's generator)
---@field mean? number mean (default 0)
---@field std? number standard deviation (default 1)
local RandnOptions = {}

---Uniform random numbers in [lo, hi). With a seed the numbers are the same on every machine.
---
---Example: `ms.rand({3}, {seed = 1})`
---@param shape shape the sizes, a table such as {2, 3}
---@param opts? metastep.RandOptions seed and bounds
---@return Tensor a new tensor
function ms.rand(shape, opts) end

---Normal random numbers N(mean, std^2). With a seed the numbers are the same on every machine.
---
---Example: `ms.randn({20}, {seed = 2})`
---@param shape shape the sizes, a table such as {2, 3}
---@param opts? metastep.RandnOptions seed, mean and std
---@return Tensor a new tensor
function ms.randn(shape, opts) end

---Seeds the context's random generator (used by rand and randn without a seed).
---
---Example: `ms.seed(42)`
---@param s integer the seed
function ms.seed(s) end

---Concatenates tensors along a dimension (all other sizes must agree).
---
---Example: `ms.cat({ms.ones{2}, ms.zeros{3}})`
---@param list Tensor[] the tensors
---@param dim? integer the dimension, 1-based, negative from the end (default: 1)
---@return Tensor a new tensor
function ms.cat(list, dim) end

-- ============================================================ element-wise math

---Element-wise |x|. Differentiable (tapes and forward levels see it).
---Method form: t:abs().
---
---Example: `ms.abs(ms.tensor{0.5, 2})`
---@param x tensorish the input
---@return Tensor a new tensor of x's shape
function ms.abs(x) end

---Element-wise -x. Differentiable (tapes and forward levels see it).
---Method form: t:neg().
---
---Example: `ms.neg(ms.tensor{0.5, 2})`
---@param x tensorish the input
---@return Tensor a new tensor of x's shape
function ms.neg(x) end

---Element-wise e^x. Differentiable (tapes and forward levels see it).
---Method form: t:exp().
---
---Example: `ms.exp(ms.tensor{0.5, 2})`
---@param x tensorish the input
---@return Tensor a new tensor of x's shape
function ms.exp(x) end

---Element-wise e^x - 1, accurate near 0. Differentiable (tapes and forward levels see it).
---Method form: t:expm1().
---
---Example: `ms.expm1(ms.tensor{0.5, 2})`
---@param x tensorish the input
---@return Tensor a new tensor of x's shape
function ms.expm1(x) end

---Element-wise the natural logarithm. Differentiable (tapes and forward levels see it).
---Method form: t:log().
---
---Example: `ms.log(ms.tensor{0.5, 2})`
---@param x tensorish the input
---@return Tensor a new tensor of x's shape
function ms.log(x) end

---Element-wise log(1 + x), accurate near 0. Differentiable (tapes and forward levels see it).
---Method form: t:log1p().
---
---Example: `ms.log1p(ms.tensor{0.5, 2})`
---@param x tensorish the input
---@return Tensor a new tensor of x's shape
function ms.log1p(x) end

---Element-wise the square root. Differentiable (tapes and forward levels see it).
---Method form: t:sqrt().
---
---Example: `ms.sqrt(ms.tensor{0.5, 2})`
---@param x tensorish the input
---@return Tensor a new tensor of x's shape
function ms.sqrt(x) end

---Element-wise x^2. Differentiable (tapes and forward levels see it).
---Method form: t:square().
---
---Example: `ms.square(ms.tensor{0.5, 2})`
---@param x tensorish the input
---@return Tensor a new tensor of x's shape
function ms.square(x) end

---Element-wise 1 / x. Differentiable (tapes and forward levels see it).
---Method form: t:reciprocal().
---
---Example: `ms.reciprocal(ms.tensor{0.5, 2})`
---@param x tensorish the input
---@return Tensor a new tensor of x's shape
function ms.reciprocal(x) end

---Element-wise the hyperbolic tangent. Differentiable (tapes and forward levels see it).
---Method form: t:tanh().
---
---Example: `ms.tanh(ms.tensor{0.5, 2})`
---@param x tensorish the input
---@return Tensor a new tensor of x's shape
function ms.tanh(x) end

---Element-wise 1 / (1 + e^-x). Differentiable (tapes and forward levels see it).
---Method form: t:sigmoid().
---
---Example: `ms.sigmoid(ms.tensor{0.5, 2})`
---@param x tensorish the input
---@return Tensor a new tensor of x's shape
function ms.sigmoid(x) end

---Element-wise max(x, 0). Differentiable (tapes and forward levels see it).
---Method form: t:relu().
---
---Example: `ms.relu(ms.tensor{0.5, 2})`
---@param x tensorish the input
---@return Tensor a new tensor of x's shape
function ms.relu(x) end

---Element-wise log(1 + e^x), computed without overflow. Differentiable (tapes and forward levels see it).
---Method form: t:softplus().
---
---Example: `ms.softplus(ms.tensor{0.5, 2})`
---@param x tensorish the input
---@return Tensor a new tensor of x's shape
function ms.softplus(x) end

---Element-wise the sine. Differentiable (tapes and forward levels see it).
---Method form: t:sin().
---
---Example: `ms.sin(ms.tensor{0.5, 2})`
---@param x tensorish the input
---@return Tensor a new tensor of x's shape
function ms.sin(x) end

---Element-wise the cosine. Differentiable (tapes and forward levels see it).
---Method form: t:cos().
---
---Example: `ms.cos(ms.tensor{0.5, 2})`
---@param x tensorish the input
---@return Tensor a new tensor of x's shape
function ms.cos(x) end

---Element-wise -1, 0 or 1 (the derivative is 0). Differentiable (tapes and forward levels see it).
---Method form: t:sign().
---
---Example: `ms.sign(ms.tensor{0.5, 2})`
---@param x tensorish the input
---@return Tensor a new tensor of x's shape
function ms.sign(x) end

---Element-wise rounding down (the derivative is 0). Differentiable (tapes and forward levels see it).
---Method form: t:floor().
---
---Example: `ms.floor(ms.tensor{0.5, 2})`
---@param x tensorish the input
---@return Tensor a new tensor of x's shape
function ms.floor(x) end

---Element-wise rounding up (the derivative is 0). Differentiable (tapes and forward levels see it).
---Method form: t:ceil().
---
---Example: `ms.ceil(ms.tensor{0.5, 2})`
---@param x tensorish the input
---@return Tensor a new tensor of x's shape
function ms.ceil(x) end

---Element-wise rounding to the nearest integer, halves away from zero (the derivative is 0). Differentiable (tapes and forward levels see it).
---Method form: t:round().
---
---Example: `ms.round(ms.tensor{0.5, 2})`
---@param x tensorish the input
---@return Tensor a new tensor of x's shape
function ms.round(x) end

---Element-wise 1 where x is finite, 0 where it is inf or NaN. Differentiable (tapes and forward levels see it).
---Method form: t:isfinite().
---
---Example: `ms.isfinite(ms.tensor{0.5, 2})`
---@param x tensorish the input
---@return Tensor a new tensor of x's shape
function ms.isfinite(x) end

---Element-wise a + b (also the + operator), with NumPy broadcasting. Method form: a:add(b).
---
---Example: `ms.add(ms.tensor{1, 2}, 3)`
---@param a tensorish first operand
---@param b tensorish second operand
---@return Tensor a new tensor of the broadcast shape
function ms.add(a, b) end

---Element-wise a - b (also the - operator), with NumPy broadcasting. Method form: a:sub(b).
---
---Example: `ms.sub(ms.tensor{1, 2}, 3)`
---@param a tensorish first operand
---@param b tensorish second operand
---@return Tensor a new tensor of the broadcast shape
function ms.sub(a, b) end

---Element-wise a * b (also the * operator), with NumPy broadcasting. Method form: a:mul(b).
---
---Example: `ms.mul(ms.tensor{1, 2}, 3)`
---@param a tensorish first operand
---@param b tensorish second operand
---@return Tensor a new tensor of the broadcast shape
function ms.mul(a, b) end

---Element-wise a / b (also the / operator), with NumPy broadcasting. Method form: a:div(b).
---
---Example: `ms.div(ms.tensor{1, 2}, 3)`
---@param a tensorish first operand
---@param b tensorish second operand
---@return Tensor a new tensor of the broadcast shape
function ms.div(a, b) end

---Element-wise a ^ b (also the ^ operator), with NumPy broadcasting. Method form: a:pow(b).
---
---Example: `ms.pow(ms.tensor{1, 2}, 3)`
---@param a tensorish first operand
---@param b tensorish second operand
---@return Tensor a new tensor of the broadcast shape
function ms.pow(a, b) end

---Element-wise max(a, b), with NumPy broadcasting. Method form: a:maximum(b).
---
---Example: `ms.maximum(ms.tensor{1, 2}, 3)`
---@param a tensorish first operand
---@param b tensorish second operand
---@return Tensor a new tensor of the broadcast shape
function ms.maximum(a, b) end

---Element-wise min(a, b), with NumPy broadcasting. Method form: a:minimum(b).
---
---Example: `ms.minimum(ms.tensor{1, 2}, 3)`
---@param a tensorish first operand
---@param b tensorish second operand
---@return Tensor a new tensor of the broadcast shape
function ms.minimum(a, b) end

---Element-wise atan2(a, b), the angle of the point (b, a), with NumPy broadcasting. Method form: a:atan2(b).
---
---Example: `ms.atan2(ms.tensor{1, 2}, 3)`
---@param a tensorish first operand
---@param b tensorish second operand
---@return Tensor a new tensor of the broadcast shape
function ms.atan2(a, b) end

---Element-wise a == b as 1 or 0, with NumPy broadcasting. Method form: a:eq(b).
---
---Example: `ms.eq(ms.tensor{1, 2}, 3)`
---@param a tensorish first operand
---@param b tensorish second operand
---@return Tensor a new tensor of the broadcast shape
function ms.eq(a, b) end

---Element-wise a ~= b as 1 or 0, with NumPy broadcasting. Method form: a:ne(b).
---
---Example: `ms.ne(ms.tensor{1, 2}, 3)`
---@param a tensorish first operand
---@param b tensorish second operand
---@return Tensor a new tensor of the broadcast shape
function ms.ne(a, b) end

---Element-wise a < b as 1 or 0, with NumPy broadcasting. Method form: a:lt(b).
---
---Example: `ms.lt(ms.tensor{1, 2}, 3)`
---@param a tensorish first operand
---@param b tensorish second operand
---@return Tensor a new tensor of the broadcast shape
function ms.lt(a, b) end

---Element-wise a <= b as 1 or 0, with NumPy broadcasting. Method form: a:le(b).
---
---Example: `ms.le(ms.tensor{1, 2}, 3)`
---@param a tensorish first operand
---@param b tensorish second operand
---@return Tensor a new tensor of the broadcast shape
function ms.le(a, b) end

---Element-wise a > b as 1 or 0, with NumPy broadcasting. Method form: a:gt(b).
---
---Example: `ms.gt(ms.tensor{1, 2}, 3)`
---@param a tensorish first operand
---@param b tensorish second operand
---@return Tensor a new tensor of the broadcast shape
function ms.gt(a, b) end

---Element-wise a >= b as 1 or 0, with NumPy broadcasting. Method form: a:ge(b).
---
---Example: `ms.ge(ms.tensor{1, 2}, 3)`
---@param a tensorish first operand
---@param b tensorish second operand
---@return Tensor a new tensor of the broadcast shape
function ms.ge(a, b) end

---Element-wise clamp to [lo, hi]. Method form: t:clamp(lo, hi).
---
---Example: `ms.clamp(ms.tensor{-2, 0.5, 3}, 0, 1)`
---@param x Tensor the input
---@param lo? number lower bound (default: -inf)
---@param hi? number upper bound (default: inf)
---@return Tensor a new tensor
function ms.clamp(x, lo, hi) end

---Element-wise selection: a where cond ~= 0, else b (broadcast). Method form: cond:where(a, b).
---
---Example: `ms.where(ms.gt(x, 0), x, 0)`
---@param cond tensorish the condition
---@param a tensorish values where cond is nonzero
---@param b tensorish values elsewhere
---@return Tensor a new tensor
function ms.where(cond, a, b) end

-- ============================================================ reductions

---The sum over all elements (a 0-d tensor) or along one dimension.
---Method form: t:sum(dim, keepdim).
---
---Example: `ms.sum(ms.tensor{{1, 2}, {3, 4}}, 1)`
---@param x Tensor the input
---@param dim? integer the dimension, 1-based, negative from the end (default: all)
---@param keepdim? boolean keep the reduced dimension with size 1 (default: false)
---@return Tensor a new tensor
function ms.sum(x, dim, keepdim) end

---The mean over all elements (a 0-d tensor) or along one dimension.
---Method form: t:mean(dim, keepdim).
---
---Example: `ms.mean(ms.tensor{{1, 2}, {3, 4}}, 1)`
---@param x Tensor the input
---@param dim? integer the dimension, 1-based, negative from the end (default: all)
---@param keepdim? boolean keep the reduced dimension with size 1 (default: false)
---@return Tensor a new tensor
function ms.mean(x, dim, keepdim) end

---The maximum over all elements (a 0-d tensor) or along one dimension.
---Method form: t:max(dim, keepdim).
---
---Example: `ms.max(ms.tensor{{1, 2}, {3, 4}}, 1)`
---@param x Tensor the input
---@param dim? integer the dimension, 1-based, negative from the end (default: all)
---@param keepdim? boolean keep the reduced dimension with size 1 (default: false)
---@return Tensor a new tensor
function ms.max(x, dim, keepdim) end

---The minimum over all elements (a 0-d tensor) or along one dimension.
---Method form: t:min(dim, keepdim).
---
---Example: `ms.min(ms.tensor{{1, 2}, {3, 4}}, 1)`
---@param x Tensor the input
---@param dim? integer the dimension, 1-based, negative from the end (default: all)
---@param keepdim? boolean keep the reduced dimension with size 1 (default: false)
---@return Tensor a new tensor
function ms.min(x, dim, keepdim) end

---The product over all elements (a 0-d tensor) or along one dimension.
---Method form: t:prod(dim, keepdim).
---
---Example: `ms.prod(ms.tensor{{1, 2}, {3, 4}}, 1)`
---@param x Tensor the input
---@param dim? integer the dimension, 1-based, negative from the end (default: all)
---@param keepdim? boolean keep the reduced dimension with size 1 (default: false)
---@return Tensor a new tensor
function ms.prod(x, dim, keepdim) end

---The Euclidean norm over all elements (a 0-d tensor) or along one dimension.
---Method form: t:norm(dim, keepdim).
---
---Example: `ms.norm(ms.tensor{{1, 2}, {3, 4}}, 1)`
---@param x Tensor the input
---@param dim? integer the dimension, 1-based, negative from the end (default: all)
---@param keepdim? boolean keep the reduced dimension with size 1 (default: false)
---@return Tensor a new tensor
function ms.norm(x, dim, keepdim) end

---The 1-based index of the maximum over all elements (a 0-d tensor) or along one dimension.
---Method form: t:argmax(dim, keepdim).
---
---Example: `ms.argmax(ms.tensor{{1, 2}, {3, 4}}, 1)`
---@param x Tensor the input
---@param dim? integer the dimension, 1-based, negative from the end (default: all)
---@param keepdim? boolean keep the reduced dimension with size 1 (default: false)
---@return Tensor a new tensor
function ms.argmax(x, dim, keepdim) end

---The 1-based index of the minimum over all elements (a 0-d tensor) or along one dimension.
---Method form: t:argmin(dim, keepdim).
---
---Example: `ms.argmin(ms.tensor{{1, 2}, {3, 4}}, 1)`
---@param x Tensor the input
---@param dim? integer the dimension, 1-based, negative from the end (default: all)
---@param keepdim? boolean keep the reduced dimension with size 1 (default: false)
---@return Tensor a new tensor
function ms.argmin(x, dim, keepdim) end

---Log(sum(exp(x))), computed without overflow over all elements (a 0-d tensor) or along one dimension.
---Method form: t:logsumexp(dim, keepdim).
---
---Example: `ms.logsumexp(ms.tensor{{1, 2}, {3, 4}}, 1)`
---@param x Tensor the input
---@param dim? integer the dimension, 1-based, negative from the end (default: all)
---@param keepdim? boolean keep the reduced dimension with size 1 (default: false)
---@return Tensor a new tensor
function ms.logsumexp(x, dim, keepdim) end

---True if no element of x is inf or NaN. Method form: t:all_finite().
---
---Example: `ms.all_finite(ms.tensor{1, 0/0})`
---@param x Tensor the input
---@return boolean 
function ms.all_finite(x) end

---max |a - b| over the elements of two tensors of the same shape (a number).
---
---Example: `ms.max_abs_diff(ms.ones{2}, ms.zeros{2})`
---@param a Tensor first tensor
---@param b Tensor second tensor
---@return number the largest absolute difference
function ms.max_abs_diff(a, b) end

---True if a and b have the same shape and, element-wise, a == b or
---|a - b| <= atol + rtol |b|. A NaN is never close.
---
---Example: `ms.allclose(ms.ones{2}, ms.ones{2} + 1e-13)`
---@param a Tensor first tensor
---@param b Tensor second tensor
---@param rtol? number relative tolerance (default: 1e-9)
---@param atol? number absolute tolerance (default: 1e-12)
---@return boolean 
function ms.allclose(a, b, rtol, atol) end

---True if t is a metastep tensor.
---
---Example: `ms.is_tensor(ms.zeros{1})`
---@param t any any value
---@return boolean 
function ms.is_tensor(t) end

-- ============================================================ linear algebra (also ms.linalg.*)

---The inner product of two vectors (a 0-d tensor). Method form: a:dot(b).
---
---Example: `ms.dot(ms.ones{3}, ms.ones{3})`
---@param a Tensor vector [n]
---@param b Tensor vector [n]
---@return Tensor a 0-d tensor
function ms.dot(a, b) end

---Matrix-vector product A x. Method form: A:matvec(x).
---
---Example: `ms.matvec(ms.eye(2), ms.ones{2})`
---@param A Tensor matrix [n, m]
---@param x Tensor vector [m]
---@return Tensor a vector [n]
function ms.matvec(A, x) end

---Matrix product A B. Method form: A:matmul(B).
---
---Example: `ms.matmul(ms.eye(2), ms.ones{2, 3})`
---@param A Tensor matrix [n, k]
---@param B Tensor matrix [k, m]
---@return Tensor a matrix [n, m]
function ms.matmul(A, B) end

---Outer product a b^T. Method form: a:outer(b).
---
---Example: `ms.outer(ms.ones{2}, ms.ones{3})`
---@param a Tensor vector [n]
---@param b Tensor vector [m]
---@return Tensor a matrix [n, m]
function ms.outer(a, b) end

---The solution x of A x = b (LU with pivoting; a singular A raises).
---
---Example: `ms.solve(ms.eye(2) * 2, ms.ones{2})`
---@param A Tensor square matrix [n, n]
---@param b Tensor vector [n] or matrix [n, k]
---@return Tensor x, the shape of b
function ms.solve(A, b) end

---The lower Cholesky factor L of a symmetric positive definite A = L L^T (reads the lower triangle).
---
---Example: `ms.cholesky(ms.eye(2) * 4)`
---@param A Tensor symmetric positive definite [n, n]
---@return Tensor L [n, n]
function ms.cholesky(A) end

---The inverse of a square matrix.
---
---Example: `ms.inv(ms.eye(2) * 2)`
---@param A Tensor square matrix [n, n]
---@return Tensor a new [n, n] matrix
function ms.inv(A) end

---The determinant of a square matrix (a 0-d tensor).
---
---Example: `ms.det(ms.eye(3) * 2)`
---@param A Tensor square matrix [n, n]
---@return Tensor a 0-d tensor
function ms.det(A) end

---Eigen-decomposition of a symmetric matrix: eigenvalues in ascending order and the
---eigenvectors as columns (reads the lower triangle).
---
---Example: `local lambda, Q = ms.eigh(ms.tensor{{2, 1}, {1, 2}})`
---@param A Tensor symmetric matrix [n, n]
---@return Tensor lambda [n], ascending
---@return Tensor Q [n, n], A = Q diag(lambda) Q^T
function ms.eigh(A) end

---QR decomposition A = Q R (reduced).
---
---Example: `local Q, R = ms.qr(ms.randn({4, 3}, {seed = 1}))`
---@param A Tensor matrix [n, m], n >= m
---@return Tensor Q [n, m] with orthonormal columns
---@return Tensor R [m, m] upper triangular
function ms.qr(A) end

-- ============================================================ autodiff

---Sums x down to shape (the adjoint of broadcasting).
---
---Example: `ms.sum_to(ms.ones{2, 3}, {3})`
---@param x Tensor the input
---@param shape shape a shape x broadcasts from
---@return Tensor a new tensor of that shape
function ms.sum_to(x, shape) end

---log(softmax(x)) along a dimension, computed stably.
---
---Example: `ms.log_softmax(ms.tensor{1, 2, 3})`
---@param x Tensor the logits
---@param dim? integer the dimension (default: -1, the last)
---@return Tensor a new tensor of x's shape
function ms.log_softmax(x, dim) end

---Softmax cross-entropy per row: -log softmax(logits[i])[labels[i]].
---
---Example: `ms.softmax_xent(ms.zeros{2, 3}, ms.tensor{1, 3})`
---@param logits Tensor [n, k] scores
---@param labels Tensor [n] 1-based class indices
---@return Tensor losses [n]
function ms.softmax_xent(logits, labels) end

---x's value with no derivative flowing through it (also ms.autodiff.stop_gradient).
---
---Example: `ms.grad(function(x) return ms.stop_gradient(x) * x end)(ms.tensor(3))`
---@param x Tensor the input
---@return Tensor the same values, constant for every level
function ms.stop_gradient(x) end

---Pushes a raw autodiff level (a tape or a forward level); the functional API (grad, jvp, ...)
---is built on it. Returns the level (methods watch, gradient, tangent, pop).
---
---Example: `local lv = ms.ad_push("reverse"); lv:pop()`
---@param mode? string "reverse" (default) or "forward"
---@return userdata the level
function ms.ad_push(mode) end

---The number of autodiff levels currently active.
---
---Example: `ms.ad_depth()`
---@return integer 
function ms.ad_depth() end

---@class metastep.GradOptions
---@field argnums? integer|integer[] which argument(s) to differentiate (default 1)
local GradOptions = {}

---Transforms f into a function returning f(...) and its gradient with respect to the argnums-th
---argument(s), in the same structure (tensor, number or table of tensors). f must return a one-element
---tensor or a number. Nests to any order.
---
---Example: `local v, g = ms.value_and_grad(function(x) return ms.sum(x * x) end)(ms.ones{3})`
---@param f function the function to differentiate
---@param opts? metastep.GradOptions which arguments
---@return function g(...) -> value, gradient
function ms.value_and_grad(f, opts) end

---Transforms f into a function returning only its gradient (see value_and_grad).
---
---Example: `ms.grad(function(x) return ms.sum(x * x) end)(ms.ones{3})`
---@param f function the function to differentiate
---@param opts? metastep.GradOptions which arguments
---@return function g(...) -> gradient
function ms.grad(f, opts) end

---Forward mode: f(x) and the Jacobian-vector product J v.
---
---Example: `ms.jvp(ms.sin, ms.tensor{0}, ms.tensor{1})`
---@param f function the function
---@param x Tensor|number|table the point
---@param v Tensor|number|table the tangent, the structure of x
---@return Tensor f(x)
---@return Tensor J v
function ms.jvp(f, x, v) end

---Reverse mode: f(x) and its pullback; pullback(gy) returns J^T gy in the structure of x.
---
---Example: `local y, back = ms.vjp(ms.exp, ms.tensor{0}); back(ms.ones{1})`
---@param f function the function
---@param x Tensor|number|table the point
---@return Tensor f(x)
---@return function pullback(gy)
function ms.vjp(f, x) end

---Hessian-vector product H v of a scalar function f at x (forward-over-reverse).
---
---Example: `ms.hvp(function(x) return ms.sum(x ^ 3) end, ms.ones{2}, ms.tensor{1, 0})`
---@param f function scalar function
---@param x Tensor|number|table the point
---@param v Tensor|number|table the direction
---@return Tensor H v, the structure of x
function ms.hvp(f, x, v) end

---@class metastep.CheckGradOptions
---@field eps? number finite-difference step (default 1e-6)
---@field rtol? number relative tolerance (default 1e-6)
---@field atol? number absolute tolerance (default 1e-8)
local CheckGradOptions = {}

---Compares grad(f)(x) with central differences of f.
---
---Example: `ms.check_grad(function(x) return ms.sum(ms.sin(x)) end, ms.randn({3}, {seed = 1}))`
---@param f function scalar function
---@param x Tensor|number the point
---@param opts? metastep.CheckGradOptions step and tolerances
---@return boolean ok: max_error <= 1
---@return number max_error, |analytic - numeric| / (atol + rtol max(|numeric|, 1))
---@return string report naming the worst element
function ms.check_grad(f, x, opts) end

---@class metastep.CustomSpec
---@field name string the primitive's name (in messages)
---@field nin integer number of inputs
---@field forward function forward(x1, ..., xn) -> out
---@field vjp? function vjp(g, out, x1, ..., xn) -> g1, ..., gn
---@field jvp? function jvp(t1, ..., tn, out, x1, ..., xn) -> tangent of out
local CustomSpec = {}

---Defines a primitive with Lua rules, usable inside grad/jvp like a built-in one.
---
---Example:
---```lua
---local sq = ms.custom{name = "sq", nin = 1, forward = function(x) return x * x end,
---  vjp = function(g, out, x) return g * 2 * x end}
---print(ms.grad(function(x) return ms.sum(sq(x)) end)(ms.ones{2}))
---```
---@param spec metastep.CustomSpec name, arity and rules
---@return function the primitive op(x1, ..., xn)
function ms.custom(spec) end

-- ============================================================ memory and the module

---Bytes of tensor storage in use and the budget of the engine context.
---
---Example: `local used, limit = ms.memory()`
---@return integer bytes in use
---@return integer the limit (0 = unlimited)
function ms.memory() end

---Sets the engine context's memory budget for tensor storage (0 = unlimited).
---
---Example: `ms.set_memory_limit(1 << 30)`
---@param bytes integer the limit in bytes, >= 0
function ms.set_memory_limit(bytes) end

---Sets the BLAS threads of matrix products: n >= 1 runs every product on n threads; 0 (the
---default) chooses by size, one thread below 512 x 512 multiply-adds and all cores above (small
---products are slower on two threads). Unless set here, OPENBLAS_NUM_THREADS or OMP_NUM_THREADS
---in the environment is obeyed.
---
---Example: `ms.set_threads(1)`
---@param n integer threads per product, 0..4096 (0 = by size)
function ms.set_threads(n) end

---The BLAS thread setting (0 = by size), or the threads a product of `work` multiply-adds gets.
---
---Example: `print(ms.threads(), ms.threads(1000 * 1000))`
---@param work? integer multiply-adds of a product, >= 0
---@return integer the setting, or the thread count for that work
function ms.threads(work) end

---Check mode (off by default): when on, the first primitive that turns finite inputs into NaN
---or inf fails, naming the op, the position and the input shapes (e.g. "check_numerics: div
---produced inf at out[2,1] from finite inputs of shapes [2,2] and [2,2]"), including ops run
---by a backward pass.
---
---Example: `ms.set_check_numerics(true)`
---@param on boolean true to check every primitive's output
---@return boolean the previous setting
function ms.set_check_numerics(on) end

---Prints help: the modules (no argument), a submodule's fields (a table or its name),
---or a function's documentation (signature, parameters, options with defaults, an example).
---
---Example: `help(ms.meta.train)`
---@param what? function|table|string what to describe
function ms.help(what) end

---The text help() prints without an argument: the modules and their functions.
---
---Example: `print(ms.help_text())`
---@return string 
function ms.help_text() end

-- ============================================================ tensor methods
-- (the element-wise, reduction and linear-algebra functions above are methods too: t:sum(), a:matmul(b))

---The sizes of the dimensions.
---
---Example: `ms.zeros{2, 3}:shape()`
---@return integer[] a new table such as {2, 3}
function Tensor:shape() end

---The size of one dimension, or the shape when dim is nil.
---
---Example: `ms.zeros{2, 3}:size(2)`
---@param dim? integer the dimension, 1-based, negative from the end
---@return integer|integer[] 
function Tensor:size(dim) end

---The number of elements.
---
---Example: `ms.zeros{2, 3}:numel()`
---@return integer 
function Tensor:numel() end

---The number of dimensions.
---
---Example: `ms.zeros{2, 3}:ndim()`
---@return integer 
function Tensor:ndim() end

---True if the elements are stored in row-major order without gaps.
---
---Example: `ms.zeros{2, 3}:t():is_contiguous()`
---@return boolean 
function Tensor:is_contiguous() end

---True if the two tensors are views of the same storage.
---
---Example: `t:shares_storage(t:t())`
---@param other Tensor another tensor
---@return boolean 
function Tensor:shares_storage(other) end

---The storage's version counter, bumped by every in-place write.
---
---Example: `t:version()`
---@return integer 
function Tensor:version() end

---The value of a one-element tensor as a Lua number.
---
---Example: `ms.sum(ms.ones{3}):item()`
---@return number 
function Tensor:item() end

---The values as nested Lua tables (a number for a 0-d tensor).
---
---Example: `ms.eye(2):totable()`
---@return table|number 
function Tensor:totable() end

---The NumPy-style text of the tensor (what print shows).
---
---Example: `ms.eye(2):tostring()`
---@return string 
function Tensor:tostring() end

---A copy with its own storage.
---
---Example: `local c = t:clone()`
---@return Tensor a new tensor
function Tensor:clone() end

---The tensor itself if contiguous, else a contiguous copy.
---
---Example: `t:t():contiguous()`
---@return Tensor 
function Tensor:contiguous() end

---A view with another shape (the tensor must be contiguous); shares storage.
---
---Example: `ms.zeros{6}:view{2, 3}`
---@param shape shape the new sizes, a table or integers
---@return Tensor a view
function Tensor:view(shape) end

---Another shape: a view of a contiguous tensor, else a copy.
---
---Example: `ms.arange(6):reshape{2, 3}`
---@param shape shape the new sizes, a table or integers
---@return Tensor 
function Tensor:reshape(shape) end

---The elements as a vector.
---
---Example: `ms.eye(2):flatten()`
---@return Tensor a vector [numel]
function Tensor:flatten() end

---A view with two dimensions swapped (t:t() is transpose of a matrix).
---
---Example: `ms.zeros{2, 3}:transpose(1, 2)`
---@param d1? integer first dimension (default 1 for a matrix)
---@param d2? integer second dimension (default 2)
---@return Tensor a view
function Tensor:transpose(d1, d2) end

---A view with the dimensions reordered.
---
---Example: `ms.zeros{2, 3, 4}:permute{3, 1, 2}`
---@param dims integer[] a permutation of 1..ndim
---@return Tensor a view
function Tensor:permute(dims) end

---A view of elements i..j (inclusive) along dim.
---
---Example: `ms.arange(10):slice(1, 2, 5)`
---@param dim integer the dimension
---@param i integer first index, 1-based, negative from the end
---@param j integer last index, included
---@param step? integer stride (default 1)
---@return Tensor a view
function Tensor:slice(dim, i, j, step) end

---A view of index i along dim, with that dimension removed.
---
---Example: `ms.eye(3):select(2, 1)`
---@param dim integer the dimension
---@param i integer the index, 1-based, negative from the end
---@return Tensor a view
function Tensor:select(dim, i) end

---A broadcast view to a larger shape (size-1 dimensions repeated without copying; read-only).
---
---Example: `ms.ones{1, 3}:expand{2, 3}`
---@param shape shape the target sizes
---@return Tensor a view
function Tensor:expand(shape) end

---Sets every element to value, in place.
---
---Example: `ms.zeros{3}:fill(7)`
---@param value number the value
---@return Tensor the tensor itself
function Tensor:fill(value) end

---Copies src (broadcast) into the tensor, in place.
---
---Example: `ms.zeros{2, 2}:assign(ms.ones{2})`
---@param src Tensor the values
---@return Tensor the tensor itself
function Tensor:assign(src) end

-- ============================================================ objectives

---f(w), differentiable.
---
---Example: `obj:value(ms.zeros{obj:dim()})`
---@param w Tensor the point [d]
---@return Tensor a 0-d tensor
function Objective:value(w) end

---The gradient of f at w, differentiable (meta-gradients trace through it).
---
---Example: `obj:grad(ms.ones{obj:dim()})`
---@param w Tensor the point [d]
---@return Tensor a vector [d]
function Objective:grad(w) end

---The Hessian-vector product H(w) v.
---
---Example: `obj:hvp(w, v)`
---@param w Tensor the point [d]
---@param v Tensor the direction [d]
---@return Tensor a vector [d]
function Objective:hvp(w, v) end

---The dimension d of w.
---
---Example: `obj:dim()`
---@return integer 
function Objective:dim() end

---The objective's name (kind, or the name given to from_function).
---
---Example: `obj:name()`
---@return string 
function Objective:name() end

---A quadratic's H, w* (or nil) and f*, as copies.
---
---Example: `local H, wstar, fstar = obj:parts()`
---@return Tensor H
---@return Tensor|nil wstar
---@return number fstar
function Objective:parts() end

---The same kind of objective on the samples idx (least squares, logistic).
---
---Example: `obj:minibatch{1, 2, 3}`
---@param idx integer[] 1-based sample indices
---@return Objective a new objective
function Objective:minibatch(idx) end

---The gradient on the samples idx (repeats allowed).
---
---Example: `obj:grad_batch(w, {1, 1, 4})`
---@param w Tensor the point [d]
---@param idx integer[] 1-based sample indices
---@return Tensor a vector [d]
function Objective:grad_batch(w, idx) end

---A quadratic's spectrum (computed once and kept): eigenvalues ascending and eigenvectors.
---
---Example: `local lambda, Q = obj:eigh()`
---@return Tensor lambda [d]
---@return Tensor Q [d, d]
function Objective:eigh() end

---Raises unless a quadratic's H is positive semi-definite.
---
---Example: `obj:check_psd("my_method")`
---@param what? string the name used in the message (default "check_psd")
---@return boolean true
function Objective:check_psd(what) end

---@class metastep.QuadraticOptions
---@field wstar? Tensor the minimizer (default: 0)
---@field fstar? number the minimum value (default 0)
local QuadraticOptions = {}

---f(w) = 1/2 (w - w*)^T H (w - w*) + f*. H must be square, finite and symmetric (copied).
---
---Example: `ms.objective.quadratic(ms.eye(2))`
---@param H Tensor symmetric [d, d]
---@param opts? metastep.QuadraticOptions minimizer and minimum
---@return Objective kind "quadratic"
function ms.objective.quadratic(H, opts) end

---f(w) = 1/(2n) |X w - y|^2.
---
---Example: `ms.objective.least_squares(ms.randn({10, 3}, {seed = 1}), ms.randn({10}, {seed = 2}))`
---@param X Tensor inputs [n, d]
---@param y Tensor targets [n]
---@return Objective kind "least_squares"
function ms.objective.least_squares(X, y) end

---Logistic regression: mean log(1 + exp(-s x^T w)) + l2/2 |w|^2 with s = 2y - 1.
---
---Example: `ms.objective.logistic(X, ms.tensor{0, 1, 1})`
---@param X Tensor inputs [n, d]
---@param y Tensor labels [n] in {0, 1}
---@param l2? number ridge penalty (default 0)
---@return Objective kind "logistic"
function ms.objective.logistic(X, y, l2) end

---@class metastep.RandomQuadraticOptions
---@field d integer the dimension
---@field eigenvalues? number[]|Tensor {lo, hi} or the eigenvalues themselves (default {1, 10})
---@field spacing? string "linspace" (default) or "uniform" draws of the eigenvalues in [lo, hi]
---@field seed? integer the random rotation's seed (default 0)
---@field wstar? Tensor the minimizer (default: 0)
local RandomQuadraticOptions = {}

---A quadratic with H = Q diag(lambda) Q^T, Q a random rotation. The objective also
---carries .eigenvalues and .Q.
---
---Example: `ms.objective.random_quadratic{d = 20, eigenvalues = {1, 10}, seed = 1}`
---@param opts metastep.RandomQuadraticOptions dimension, spectrum, seed
---@return Objective kind "quadratic"
function ms.objective.random_quadratic(opts) end

---@class metastep.FromFunctionOptions
---@field dim integer the dimension of w
---@field grad? function grad(w) -> tensor [d] (default: reverse-mode autodiff of f)
---@field hvp? function hvp(w, v) -> tensor [d] (default: forward over reverse)
---@field name? string the name (default "function")
local FromFunctionOptions = {}

---An objective from a Lua function of a tensor returning a one-element tensor or a number;
---missing derivatives come from autodiff in the engine.
---
---Example: `ms.objective.from_function(function(w) return ms.sum(w ^ 4) end, {dim = 3})`
---@param f function f(w) -> one-element tensor
---@param opts metastep.FromFunctionOptions dimension and optional derivatives
---@return Objective kind "function"
function ms.objective.from_function(f, opts) end

---@class metastep.LeastSquaresTasksOptions
---@field d integer the dimension
---@field n_train integer training samples per task
---@field n_valid? integer validation samples (default 0)
---@field n_test? integer test samples (default 1000)
---@field sigma? number label noise (default 1)
---@field seed? integer the sampler's seed (default 0)
---@field wstar? string "sphere" (default, uniform on the unit sphere) or "gaussian" (N(0, I/d))
local LeastSquaresTasksOptions = {}

---A sampler of least-squares tasks y = <w*, x> + sigma N(0, 1), x ~ N(0, I). sampler() returns
---{wstar, train, valid, test, objective, valid_objective, test_objective, index}; task k is the
---same on every machine for a seed.
---
---Example:
---```lua
---local sample = ms.tasks.least_squares{d = 5, n_train = 20, n_valid = 20}
---local task = sample()
---```
---@param opts metastep.LeastSquaresTasksOptions sizes, noise and seed
---@return function sampler() -> task
function ms.tasks.least_squares(opts) end

---@class metastep.QuadraticTasksOptions
---@field d integer the dimension
---@field eigenvalues? number[] {lo, hi} (default {1, 10})
---@field seed? integer the sampler's seed (default 0)
local QuadraticTasksOptions = {}

---A sampler of random quadratics with w0 ~ N(0, I): sampler() returns {objective, w0, index}.
---
---Example: `local sample = ms.tasks.quadratic{d = 10}`
---@param opts metastep.QuadraticTasksOptions dimension, spectrum, seed
---@return function sampler() -> task
function ms.tasks.quadratic(opts) end

---The number of tasks a sampler made by ms.tasks has drawn, so a run can be continued
---(meta.train's checkpoints save it). Nil for any other function.
---
---Example: `local s = ms.tasks.quadratic{d = 3}; s(); s(); print(ms.tasks.position(s)) --> 2`
---@param sampler function a sampler from ms.tasks.least_squares or ms.tasks.quadratic
---@return integer|nil the number of tasks drawn so far (nil: not an ms.tasks sampler)
function ms.tasks.position(sampler) end

---Sets a sampler's position: the next task it draws is task n + 1 (the same task as in a fresh
---sampler's (n + 1)-th draw). Raises for a function not made by ms.tasks or a bad n.
---
---Example: `local s = ms.tasks.quadratic{d = 3}; ms.tasks.set_position(s, 4); print(s().index) --> 5`
---@param sampler function a sampler from ms.tasks.least_squares or ms.tasks.quadratic
---@param n integer the number of tasks already drawn, >= 0
function ms.tasks.set_position(sampler, n) end

---@class metastep.MlpObjectiveOptions
---@field layers integer[] the sizes {n0, n1, ..., nL}: inputs, hidden layers, classes (2..16 sizes, each >= 1)
---@field X Tensor inputs [n, n0], one sample per row (copied)
---@field y Tensor labels [n], class indices 0..nL-1 as numbers (copied)
local MlpObjectiveOptions = {}

---The mean softmax cross-entropy of an MLP classifier (ReLU hidden layers, logits out) as an
---objective of its flat parameter vector w (layout: see ms.nn.mlp_init; dim = ms.nn.mlp_size(layers)).
---Its samples are the rows of X, so ms.optim.sgd mini-batches and obj:grad_batch work; the
---gradient is back-propagation written with differentiable engine operations, so meta-gradients
---go through it. Same as ms.nn.objective_mlp.
---
---Example:
---```lua
---local X, y = ms.data.synthetic{n = 40, side = 4, classes = 3, seed = 1}
---local obj = ms.objective.mlp{layers = {16, 8, 3}, X = X, y = y}
---print(obj:value(ms.nn.mlp_init({16, 8, 3}, {seed = 2})))
---```
---@param opts metastep.MlpObjectiveOptions layers, inputs and labels
---@return Objective kind "mlp", dim mlp_size(layers), one sample per row of X
function ms.objective.mlp(opts) end

-- ============================================================ optimizers

---@class metastep.Optimizer An optimizer with meta-parameters theta (a table).
---@field name string its name
---@field kind string gd, sgd, momentum, nesterov, rmsprop, adam or custom
---@field theta table the meta-parameters' initial values
---@field params string[] the meta-parameters' names
local Optimizer = {}

---@class metastep.GDOptions
---@field lr? number|Tensor step size (default 0.1); a tensor: one step size per coordinate
---@field log_lr? boolean the meta-parameter is log_lr, so the step size stays positive (default false)
---@field schedule? function|number[] f(t) or a table of factors multiplying lr at step t (default none)
local GDOptions = {}

---Gradient descent w' = w - lr g.
---
---Example: `ms.optim.gd{lr = 0.1}`
---@param opts? metastep.GDOptions step size, meta-parameters and schedule
---@return metastep.Optimizer the optimizer
function ms.optim.gd(opts) end

---@class metastep.SgdOptions : metastep.GDOptions
---@field lr? number|Tensor step size (default 0.1); a tensor: one step size per coordinate
---@field log_lr? boolean the meta-parameter is log_lr (default false)
---@field schedule? function|number[] factors multiplying lr at step t (default none)
---@field batch? integer samples per step, drawn with replacement (default 1)
---@field seed? integer the draws' seed (default 0)
local SgdOptions = {}

---GD on mini-batches drawn each step from the objective's samples (least squares, logistic).
---
---Example: `ms.optim.sgd{lr = 0.05, batch = 8, seed = 1}`
---@param opts? metastep.SgdOptions step size, meta-parameters and schedule
---@return metastep.Optimizer the optimizer
function ms.optim.sgd(opts) end

---@class metastep.MomentumOptions : metastep.GDOptions
---@field lr? number|Tensor step size (default 0.1); a tensor: one step size per coordinate
---@field log_lr? boolean the meta-parameter is log_lr (default false)
---@field schedule? function|number[] factors multiplying lr at step t (default none)
---@field beta? number momentum, a meta-parameter too (default 0.9)
---@field nesterov? boolean Nesterov's variant (default false)
local MomentumOptions = {}

---Heavy ball: m' = beta m + g, w' = w - lr m' (Nesterov: w' = w - lr (g + beta m')).
---
---Example: `ms.optim.momentum{lr = 0.05, beta = 0.9}`
---@param opts? metastep.MomentumOptions step size, meta-parameters and schedule
---@return metastep.Optimizer the optimizer
function ms.optim.momentum(opts) end

---@class metastep.NesterovOptions : metastep.GDOptions
---@field lr? number|Tensor step size (default 0.1); a tensor: one step size per coordinate
---@field log_lr? boolean the meta-parameter is log_lr (default false)
---@field schedule? function|number[] factors multiplying lr at step t (default none)
---@field beta? number momentum, a meta-parameter too (default 0.9)
local NesterovOptions = {}

---momentum{nesterov = true}.
---
---Example: `ms.optim.nesterov{lr = 0.05}`
---@param opts? metastep.NesterovOptions step size, meta-parameters and schedule
---@return metastep.Optimizer the optimizer
function ms.optim.nesterov(opts) end

---@class metastep.RmspropOptions : metastep.GDOptions
---@field lr? number|Tensor step size (default 0.1); a tensor: one step size per coordinate
---@field log_lr? boolean the meta-parameter is log_lr (default false)
---@field schedule? function|number[] factors multiplying lr at step t (default none)
---@field rho? number decay of the squared-gradient average (default 0.99)
---@field eps? number added to the root (default 1e-8)
local RmspropOptions = {}

---RMSProp: v' = rho v + (1 - rho) g^2, w' = w - lr g / (sqrt(v') + eps).
---
---Example: `ms.optim.rmsprop{lr = 0.01}`
---@param opts? metastep.RmspropOptions step size, meta-parameters and schedule
---@return metastep.Optimizer the optimizer
function ms.optim.rmsprop(opts) end

---@class metastep.AdamOptions : metastep.GDOptions
---@field lr? number|Tensor step size (default 0.1); a tensor: one step size per coordinate
---@field log_lr? boolean the meta-parameter is log_lr (default false)
---@field schedule? function|number[] factors multiplying lr at step t (default none)
---@field beta1? number first-moment decay (default 0.9)
---@field beta2? number second-moment decay (default 0.999)
---@field eps? number (default 1e-8)
local AdamOptions = {}

---Adam with bias correction. Only lr (or log_lr) is a meta-parameter.
---
---Example: `ms.optim.adam{lr = 0.01}`
---@param opts? metastep.AdamOptions step size, meta-parameters and schedule
---@return metastep.Optimizer the optimizer
function ms.optim.adam(opts) end

---@class metastep.LearnedMlpOptions
---@field seed? integer seed of the initial theta (default 0)
---@field hidden? integer hidden ReLU units (default 32)
---@field step_scale? number the update is w - step_scale * d * exp(exp_scale * s) (default 0.001)
---@field exp_scale? number see step_scale (default 0.001)
---@field batch? integer > 0: mini-batch gradients of that many samples (default: full batch)
---@field batch_seed? integer seed of the mini-batch draws (default 0)
---@field theta? table initial meta-parameters by name {w1 =, w1t =, b1 =, w2 =, b2 =} (default: seeded)
local LearnedMlpOptions = {}

---The per-parameter MLP optimizer after Metz et al. (2019), a C optimizer applied to every
---coordinate with shared weights theta: inputs are the gradient, the parameter, momentum and
---second-moment averages at decays 0.5..0.9999, 1/sqrt(v) and m/sqrt(v), each normalised over
---the coordinates, and tanh embeddings of the step count; one hidden ReLU layer; outputs d and
---s; w' = w - step_scale * d * exp(exp_scale * s). One matrix product per layer over all
---coordinates; every meta-gradient method sees through it. `opt:save(path [, theta])` writes it.
---
---Example: `local opt = ms.optim.learned_mlp{seed = 1, batch = 32}`
---@param opts? metastep.LearnedMlpOptions seed, sizes, scales, mini-batches and theta
---@return metastep.Optimizer the optimizer (with a save method)
function ms.optim.learned_mlp(opts) end

---@class metastep.LearnedLstmOptions
---@field seed? integer seed of the initial theta (default 0)
---@field hidden? integer LSTM units per layer (default 20)
---@field layers? integer 1 or 2 LSTM layers (default 2)
---@field step_scale? number w' = w + step_scale * output (default 0.1)
---@field batch? integer > 0: mini-batch gradients of that many samples (default: full batch)
---@field batch_seed? integer seed of the mini-batch draws (default 0)
---@field theta? table initial meta-parameters by name (default: seeded)
local LearnedLstmOptions = {}

---The per-parameter LSTM optimizer after Andrychowicz et al. (2016), with the log-magnitude
---and sign preprocessing of the gradient (p = 10) and a hidden state per coordinate; shared
---weights theta, one matrix product per gate block over all coordinates.
---
---Example: `local opt = ms.optim.learned_lstm{seed = 1, layers = 1}`
---@param opts? metastep.LearnedLstmOptions seed, sizes, scale, mini-batches and theta
---@return metastep.Optimizer the optimizer (with a save method)
function ms.optim.learned_lstm(opts) end

---A learned optimizer saved by `opt:save(path)`, with the saved theta as its initial values.
---
---Example: `local opt = assert(ms.optim.load("learned.msa"))`
---@param path string the file written by opt:save
---@return metastep.Optimizer|nil the optimizer, or nil when the file cannot be read or is not one
---@return string? the message when nil
function ms.optim.load(path) end

---@class metastep.OptimizerDef
---@field name? string its name (default "custom")
---@field theta table initial meta-parameters (numbers or tensors)
---@field init function init(w, theta) -> state (a table of at most 8 tensors)
---@field step function step(theta, state, w, fw, gw, t) -> w', state' (tensor operations only)
local OptimizerDef = {}

---Defines an optimizer in Lua; the engine calls its step through the same C interface as
---the built-ins, and meta-gradient methods trace through it.
---
---Example:
---```lua
---ms.optim.new{theta = {lr = 0.1}, init = function() return {} end,
---  step = function(th, s, w, fw, g) return w - th.lr * g, s end}
---```
---@param def metastep.OptimizerDef meta-parameters, init and step
---@return metastep.Optimizer the optimizer
function ms.optim.new(def) end

-- ============================================================ meta-gradients and meta-training

---@class metastep.MetaSpec A run: an objective (or tasks), an optimizer and a meta-objective.
---@field objective? Objective the training objective (or task = {...}, or tasks = {...})
---@field task? table {objective =, valid_objective =, w0 =}
---@field tasks? table[] several tasks: the meta-objective and gradient are averaged
---@field optimizer metastep.Optimizer the optimizer; its theta gives the meta-parameters
---@field w0? Tensor the starting point (default: zeros)
---@field steps integer T, the unroll length
---@field meta? string|function log (default), naive, sum, logsum, train, valid, valid_log, valid_sum, valid_logsum or f(traj) -> tensor
---@field method? string reverse (default), forward, exact, stable or fd
---@field truncate? integer differentiate through the last K steps only (default: all)
---@field checkpoint? integer reverse: keep every K-th state and recompute (default: keep all)
---@field freeze_norm? number freeze a run once |w_t| >= R (default: none)
---@field theta? table overrides of the optimizer's meta-parameters (default: none)
---@field params? string[] the meta-parameters to differentiate (default: all)
---@field fd_step? number the fd method's relative step (default: automatic)
---@field allow_zero_loss? boolean allow log of a zero loss (default false)
---@field keep_iterates? boolean unroll: keep every w_t (default false)
---@field start? table unroll: continue from a trajectory's stop {w =, state =, t =} (default: w0, fresh state)
local MetaSpec = {}

---@class metastep.MetaResult
---@field value number the meta-objective
---@field grad table the meta-gradient, {name = number or tensor}
---@field status string ok, overflow, underflow or nan
---@field method string the method used
---@field fail_step? integer the first step that went wrong
---@field log_abs_grad? table log|dF/dtheta| (stable, exact)
local MetaResult = {}

---The meta-objective and its meta-gradient (averaged over spec.tasks when given).
---
---Example:
---```lua
---local r = ms.meta.value_and_grad{objective = ms.objective.quadratic(ms.eye(2)),
---  optimizer = ms.optim.gd{lr = 0.1}, w0 = ms.ones{2}, steps = 10}
---print(r.value, r.grad.lr)
---```
---@param spec metastep.MetaSpec the run
---@return metastep.MetaResult {value, grad, status, method, ...}
function ms.meta.value_and_grad(spec) end

---The meta-objective only, with its status.
---
---Example: `ms.meta.value{objective = obj, optimizer = ms.optim.gd{lr = 0.1}, steps = 10}`
---@param spec metastep.MetaSpec the run
---@return number the meta-objective
---@return string status
function ms.meta.value(spec) end

---Runs the optimizer on the spec's (first) task and returns the trajectory
---{T, losses, loss0, w_T, w (with keep_iterates), status, fail_step}.
---
---Example: `local traj = ms.meta.unroll{objective = obj, optimizer = ms.optim.gd{lr = 0.1}, steps = 10}`
---@param spec metastep.MetaSpec the run
---@return table the trajectory
function ms.meta.unroll(spec) end

---@class metastep.TrainOptions : metastep.MetaSpec The spec fields plus:
---@field iterations? integer meta-iterations (default 100)
---@field meta_lr? number meta step size (default 0.01)
---@field schedule? string|function inv_sqrt (default), constant, or f(k) -> meta step size
---@field meta_optimizer? string gd (default), adam or rmsprop
---@field clip? number clip each meta-gradient entry to [-c, c] (default: none)
---@field bounds? table {name = {lo, hi}}, projection after each step (default: lr, beta >= 0)
---@field on_failure? string skip (default), zero or error for a meta-gradient that is not ok
---@field progress? boolean a progress line on stderr with rate and time left (default true)
---@field log? string a CSV file of the history (default: none)
---@field callback? function f(k, record), return true to stop (default: none)
---@field sample? function f(k, i) -> task, the i-th task of iteration k (default: none)
---@field batch? integer sampled tasks per iteration (default 1)
---@field checkpoint? string|integer a file: save the run there every `every` iterations and at the end; a number: the reverse method's recompute stride (default: none)
---@field every? integer with checkpoint = "file": save every k iterations, >= 1 (default 1)
---@field resume? string a checkpoint file: continue that run, given the same options (default: none)
---@field segments? integer truncated back-propagation through a long inner run: each task's run continues over this many iterations before fresh tasks are drawn (default 1)
local TrainOptions = {}

---Meta-gradient descent on the optimizer's meta-parameters, in the engine. Ctrl-C returns the
---history so far (stopped = "interrupt").
---
---checkpoint = "file" saves the whole run (theta, the meta-optimizer's moments and step count,
---the engine's generator, the history, the best so far, the position of an ms.tasks sampler)
---atomically every `every` iterations and at the end; resume = "file" continues it, and the rest
---of the run, its history, result and CSV log (rows past the checkpoint dropped, then appended)
---equal an uninterrupted run's bit for bit. A sampler of your own must give the same task for
---the same (k, i) (or draw from ms.randn, whose generator is saved). A missing or damaged
---checkpoint raises, naming the file.
---
---Example:
---```lua
---local run = ms.meta.train{objective = obj, optimizer = ms.optim.gd{lr = 0.01}, steps = 40,
---  iterations = 200, meta_lr = 0.01}
---print(run.theta.lr)
---```
---@param opts metastep.TrainOptions the run and the meta-training options
---@return table {theta, history = {{k, theta, value, grad, status}, ...}, optimizer, best_theta, best_value, best_k, stopped}
function ms.meta.train(opts) end

-- ============================================================ networks (ms.nn)

---A dense layer x W + b, written with the engine's differentiable operations (tapes and
---forward levels see it).
---
---Example: `ms.nn.dense(ms.ones{2, 3}, ms.ones{3, 4}, ms.zeros{4})`
---@param x Tensor inputs [n, in] (or one input [in])
---@param W Tensor weights [in, out]
---@param b? Tensor bias [out] (default: none)
---@return Tensor [n, out] (or [out])
function ms.nn.dense(x, W, b) end

---One LSTM step for a batch of n rows. z = x Wx + h Wh + b is split into the gates i, f, g, o
---(column blocks of H, in that order); c' = sigmoid(f) c + sigmoid(i) tanh(g),
---h' = sigmoid(o) tanh(c'). Differentiable.
---
---Example:
---```lua
---local H = 5
---local h, c = ms.nn.lstm_cell(ms.ones{2, 3}, ms.zeros{2, H}, ms.zeros{2, H},
---  ms.randn({3, 4 * H}, {seed = 1}), ms.randn({H, 4 * H}, {seed = 2}), ms.zeros{4 * H})
---```
---@param x Tensor inputs [n, in]
---@param h Tensor hidden state [n, H]
---@param c Tensor cell state [n, H]
---@param Wx Tensor input weights [in, 4H]
---@param Wh Tensor recurrent weights [H, 4H]
---@param b? Tensor bias [4H] (default: none)
---@return Tensor h' [n, H]
---@return Tensor c' [n, H]
function ms.nn.lstm_cell(x, h, c, Wx, Wh, b) end

---The length of an MLP's flat parameter vector: sum over layers of (n_{l-1} + 1) n_l.
---
---Example: `ms.nn.mlp_size{4, 3, 2} --> 23`
---@param layers integer[] the sizes {n0, n1, ..., nL}: inputs, hidden layers, outputs (2..16 sizes, each >= 1)
---@return integer the number of parameters
function ms.nn.mlp_size(layers) end

---@class metastep.MlpInitOptions
---@field seed? integer the generator's seed, >= 0 (default 0)
---@field scale? number the weights' scale (default 1.2, good for ReLU)
local MlpInitOptions = {}

---A fresh flat parameter vector for an MLP: W1 ([n0, n1], row-major), b1, W2, b2, ... in that
---order; weights N(0, 1) scale / sqrt(fan_in) from a seeded generator, biases 0.
---
---Example: `local w = ms.nn.mlp_init({4, 3, 2}, {seed = 1})`
---@param layers integer[] the sizes {n0, n1, ..., nL} (2..16 sizes, each >= 1)
---@param opts? metastep.MlpInitOptions seed and scale
---@return Tensor w [mlp_size(layers)]
function ms.nn.mlp_init(layers, opts) end

---Layer l's weights and bias as views into the flat vector w (sharing its storage when w is
---contiguous; differentiable).
---
---Example: `local W, b = ms.nn.mlp_layer({4, 3, 2}, ms.nn.mlp_init{4, 3, 2}, 2) -- [3, 2], [2]`
---@param layers integer[] the sizes {n0, n1, ..., nL}
---@param w Tensor the flat parameters [mlp_size(layers)]
---@param l integer the layer, 1 .. #layers - 1 (a Lua integer)
---@return Tensor W_l [n_{l-1}, n_l]
---@return Tensor b_l [n_l]
function ms.nn.mlp_layer(layers, w, l) end

---The MLP's logits for the rows of X: ReLU hidden layers, a linear last layer. Reads w through
---views; differentiable in w and X.
---
---Example: `ms.nn.mlp_forward({4, 3, 2}, ms.nn.mlp_init{4, 3, 2}, ms.ones{5, 4}) -- [5, 2]`
---@param layers integer[] the sizes {n0, n1, ..., nL}
---@param w Tensor the flat parameters [mlp_size(layers)]
---@param X Tensor inputs [n, n0]
---@return Tensor logits [n, nL]
function ms.nn.mlp_forward(layers, w, X) end

---The share of rows of X whose largest logit (the first on ties) is at the label. Not
---differentiable.
---
---Example: `ms.nn.mlp_accuracy({4, 3, 2}, ms.nn.mlp_init{4, 3, 2}, ms.ones{5, 4}, ms.zeros{5})`
---@param layers integer[] the sizes {n0, n1, ..., nL}
---@param w Tensor the flat parameters [mlp_size(layers)]
---@param X Tensor inputs [n, n0]
---@param y Tensor labels [n], class indices 0..nL-1
---@return number the accuracy in [0, 1]
function ms.nn.mlp_accuracy(layers, w, X, y) end

---The mean softmax cross-entropy of an MLP as an objective of its flat w; the same as
---ms.objective.mlp (see there).
---
---Example:
---```lua
---local X, y = ms.data.synthetic{n = 40, side = 4, classes = 3, seed = 1}
---local obj = ms.nn.objective_mlp{layers = {16, 8, 3}, X = X, y = y}
---```
---@param opts metastep.MlpObjectiveOptions layers, inputs and labels
---@return Objective kind "mlp", dim mlp_size(layers), one sample per row of X
function ms.nn.objective_mlp(opts) end

---The tensors of a (nested) table as one flat vector, in a fixed order (integer keys ascending,
---then string keys sorted), plus the spec that rebuilds the table with ms.nn.unflatten. flat is
---a fresh tensor (a differentiable concatenation), never a view of the tree.
---
---Example: `local flat, spec = ms.nn.flatten{W = ms.ones{2, 3}, b = ms.zeros{3}} -- flat [9]`
---@param tree Tensor|table a tensor or a table (possibly nested) of tensors, keys strings or integers
---@return Tensor flat [P], P the total number of elements
---@return table spec the tree's structure, for unflatten
function ms.nn.flatten(tree) end

---The table flatten was given, rebuilt from a flat vector: its tensors are views into flat
---(slices and reshapes, differentiable).
---
---Example:
---```lua
---local flat, spec = ms.nn.flatten{W = ms.ones{2, 3}, b = ms.zeros{3}}
---local p = ms.nn.unflatten(flat * 2, spec) -- p.W [2, 3], p.b [3]
---```
---@param flat Tensor a vector [P] (P = the spec's element count)
---@param spec table the spec returned by ms.nn.flatten
---@return table tree the table of views, shaped like flatten's argument
function ms.nn.unflatten(flat, spec) end

---@class metastep.TreeObjectiveOptions
---@field name? string the objective's name (default "tree")
local TreeObjectiveOptions = {}

---An objective of the flat vector of a parameter table: f receives the table (views into w,
---see ms.nn.unflatten) and returns a scalar; gradient and Hessian-vector products come from
---autodiff, so optimizers and meta-gradient methods take a network given as a table.
---
---Example:
---```lua
---local obj, spec = ms.nn.tree_objective(function(p) return ms.sum(ms.square(p.W)) + ms.sum(p.b) end,
---  {W = ms.ones{2, 3}, b = ms.zeros{3}})
---print(obj:dim()) --> 9
---```
---@param f function f(tree) -> a one-element tensor
---@param tree Tensor|table the parameters' shapes (a table of tensors, as for flatten; values unused)
---@param opts? metastep.TreeObjectiveOptions the name
---@return Objective kind "function", dim the number of parameters
---@return table spec the flatten spec (ms.nn.unflatten(w, spec) gives the table of a point w)
function ms.nn.tree_objective(f, tree, opts) end

-- ============================================================ data (ms.data)

---Reads an IDX file (the MNIST family's format; gzip-compressed or plain, through zlib) of
---unsigned bytes. A file that cannot be read or is malformed gives nil and a message.
---
---Example: `local labels = ms.data.idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")`
---@param path string the file
---@return Tensor|nil a tensor of the file's shape, the bytes 0..255 as numbers
---@return string? the error message (naming the path)
function ms.data.idx(path) end

---@class metastep.FashionMnistOptions
---@field split? string "train" (60000 images, the default) or "test" (10000)
---@field dir? string the directory of the IDX files (default "/usr/share/datasets/fashion-mnist")
local FashionMnistOptions = {}

---Fashion-MNIST from Debian's dataset-fashion-mnist package (files <train|t10k>-images-idx3-ubyte.gz
---and -labels-idx1-ubyte.gz, or without .gz). When the files are absent or disagree: nil and a
---message (naming the package to install).
---
---Example: `local X, y = ms.data.fashion_mnist{split = "test"} -- [10000, 784], [10000]`
---@param opts? metastep.FashionMnistOptions split and directory
---@return Tensor|nil images [n, 784] in [0, 1]
---@return Tensor|string labels [n] (0..9), or the error message
function ms.data.fashion_mnist(opts) end

---@class metastep.SyntheticOptions
---@field n integer the number of images, >= 1
---@field seed? integer the seed, >= 0 (default 0); the same seed gives the same set on every machine
---@field side? integer images are side x side pixels, 2..64 (default 8)
---@field classes? integer the number of classes, 2..100 (default 10)
local SyntheticOptions = {}

---A small seeded image set: each image is the prototype (a smooth blob) of a uniformly drawn
---class, mixed with up to 40% of another class's prototype, plus noise, clamped to [0, 1].
---The prototypes come from the seed, so held-out images are a part of the same set: split it
---with ms.data.task.
---
---Example: `local X, y = ms.data.synthetic{n = 600, side = 8, classes = 4, seed = 1} -- [600, 64], [600]`
---@param opts metastep.SyntheticOptions size, image side, classes and seed
---@return Tensor images [n, side^2] in [0, 1]
---@return Tensor labels [n] (0..classes-1)
function ms.data.synthetic(opts) end

---@class metastep.DataTaskOptions
---@field images Tensor the images [N, D]
---@field labels Tensor the labels [N], integers >= 0 (classes 0..max(labels))
---@field n_train integer training rows, >= 1
---@field n_valid? integer validation rows, >= 0, n_train + n_valid <= N (default 0)
---@field label_noise? number p in [0, 1]: each label of both subsets is replaced with probability p by a uniformly drawn class (default 0)
---@field seed? integer the draws' seed, >= 0 (default 0)
local DataTaskOptions = {}

---A task: disjoint random training and validation subsets of an image set (a seeded
---permutation), optionally with label noise. The tensors are fresh copies.
---
---Example:
---```lua
---local X, y = ms.data.synthetic{n = 600, side = 8, classes = 4, seed = 1}
---local task = ms.data.task{images = X, labels = y, n_train = 400, n_valid = 200, label_noise = 0.2, seed = 1}
---```
---@param opts metastep.DataTaskOptions the set, sizes, noise and seed
---@return table {X = [n_train, D], y = [n_train], X_valid = [n_valid, D], y_valid = [n_valid]}
function ms.data.task(opts) end

-- ============================================================ saving and loading

---Saves a value to a file in metastep's binary format (docs/format.md): tensors, numbers
---(integers stay integers), strings, booleans and nested tables of these (string or integer
---keys), bit for bit. The file is written to a temporary beside it, fsync'd and renamed, so it
---is never left half written. Functions, userdata, tables with a metatable, cycles and nil
---are refused (an error naming the offending path); a file that cannot be written gives nil
---and a message.
---
---Example: `ms.save("run.msa", {theta = {lr = 0.1}, w = ms.ones{3}, note = "exp 1"})`
---@param path string the file
---@param value Tensor|number|string|boolean|table the value to save
---@return boolean|nil true on success
---@return string? the error message
function ms.save(path, value) end

---Loads a value saved by ms.save. The whole file is checked (magic, version, sizes, CRC-32)
---before anything is returned; a missing, truncated or corrupted file gives nil and a message
---naming the file and what is wrong.
---
---Example: `local saved = assert(ms.load("run.msa"))`
---@param path string the file
---@return any|nil the value, as saved (tensors are fresh)
---@return string? the error message
function ms.load(path) end

-- ============================================================ plots and tables

---Writes a CSV file (cells with commas or quotes are quoted). A runtime failure returns
---nil and a message.
---
---Example: `ms.plot.write_csv("out.csv", {"x", "y"}, {{1, 2}, {2, 4}})`
---@param path string the file
---@param header string[] column names
---@param rows table[] a list of rows, each a list of cells
---@return boolean|nil true on success
---@return string? the error message
function ms.plot.write_csv(path, header, rows) end

---True if gnuplot can be run (looked up in PATH, no shell).
---
---Example: `ms.plot.available()`
---@return boolean 
function ms.plot.available() end

---@class metastep.Series
---@field x number[] abscissae
---@field y number[] ordinates (non-finite points are left out)
---@field label? string the key entry
---@field with? string linespoints (default), lines or points
---@field yerr? number[] error bars
---@field dash? boolean a dashed line (default false)
local Series = {}

---@class metastep.FigureSpec
---@field file string the PNG file; file.dat (data) and file.gp (script) are written beside it
---@field series metastep.Series[] the curves, drawn in order with distinct line styles and point types
---@field title? string (default none)
---@field xlabel? string (default none)
---@field ylabel? string (default none)
---@field logx? boolean logarithmic x axis (default false)
---@field logy? boolean logarithmic y axis (default false)
---@field xrange? number[] {a, b} (default: automatic)
---@field yrange? number[] {a, b} (default: automatic)
---@field vlines? table[] {{x =, label =}, ...} vertical reference lines (default none)
---@field hlines? table[] {{y =, label =}, ...} horizontal reference lines (default none)
---@field size? integer[] {width, height} in pixels (default {900, 560})
---@field key? string legend position: words such as "top left", "outside right top" (default), "off"
local FigureSpec = {}

---Draws a PNG figure with gnuplot (run with an argument vector, never a shell; every
---user string is quoted in the script). A runtime failure returns nil and a message.
---
---Example:
---```lua
---ms.plot.figure{file = "loss.png", logy = true,
---  series = {{x = {1, 2, 3}, y = {1, 0.1, 0.01}, label = "GD"}}}
---```
---@param spec metastep.FigureSpec the figure
---@return boolean|nil true on success
---@return string? the error message
function ms.plot.figure(spec) end

---s as a gnuplot double-quoted string: backslashes and quotes escaped, a newline as \n, other
---control characters dropped, so it can never end the string or the script line.
---
---Example: `ms.plot.quote('say "hi"') --> "say \"hi\""`
---@param s string|number the text
---@return string the quoted text
function ms.plot.quote(s) end
