--- help(f): documentation read from the annotations of lua/metastep/doc.lua, the one
-- documentation source (the same ---@param / ---@return / ---@class comments an editor with
-- the Lua language server shows). The file is embedded in the module like the rest of the
-- front library; its text comes from core.front_source.
local core = require "metastep.core"

local M = {}

-- Class names of the stub whose methods live in a table of the module.
local OWNERS = {Tensor = "ms.Tensor", Objective = "ms.Objective"}

--- The text of the annotation file.
function M.source()
  local src = core.front_source and core.front_source("metastep.doc")
  if src then return src end
  -- a front library loaded from files (package.path) rather than embedded
  local path = package.searchpath("metastep.doc", package.path)
  local f = path and io.open(path)
  if not f then return nil end
  src = f:read("a")
  f:close()
  return src
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

--- Parses annotation text into {functions = {[name] = entry}, classes = {[name] = class}, order}.
-- entry: {name, signature, params = {{name, type, optional, desc}}, returns = {{type, desc}},
-- desc = {lines}, example = {lines}, line}; name is the dotted path in the module
-- ("ms.meta.train", "ms.Tensor.shape" for `function Tensor:shape()`).
-- class: {name, desc, fields = {{name, type, optional, desc}}}.
function M.parse(text)
  local out = {functions = {}, classes = {}, order = {}}
  local block = {}
  local n = 0
  local function flush_class(lines)
    local class
    for _, l in ipairs(lines) do
      local cname = l:match("^@class%s+([%w_.]+)")
      if cname then
        class = {name = cname, fields = {}, desc = {}, parent = l:match("^@class%s+[%w_.]+%s*:%s*([%w_.]+)")}
        out.classes[cname] = class
      elseif class then
        local fname, opt, ftype, fdesc = l:match("^@field%s+([%w_]+)(%??)%s+(%S+)%s*(.*)$")
        if fname then
          class.fields[#class.fields + 1] = {name = fname, optional = opt == "?", type = ftype, desc = fdesc}
        elseif l:sub(1, 1) ~= "@" then
          class.desc[#class.desc + 1] = l
        end
      end
    end
  end
  for line in (text .. "\n"):gmatch("(.-)\r?\n") do
    n = n + 1
    local doc = line:match("^%-%-%-(.*)$")
    if doc then
      block[#block + 1] = doc
    else
      local owner, sep, fname, args = line:match("^function%s+([%w_.]+)([.:])([%w_]+)%s*%((.-)%)")
      if owner then
        local name = (OWNERS[owner] or owner) .. "." .. fname
        local e = {name = name, params = {}, returns = {}, desc = {}, example = {}, line = n,
                   signature = owner:gsub("^metastep", "ms") .. sep .. fname .. "(" .. args .. ")"}
        local in_code = false
        for _, raw in ipairs(block) do
          local l = in_code and raw or raw:gsub("^ ", "", 1)
          if l:match("^```") then
            in_code = not in_code
          elseif in_code then
            e.example[#e.example + 1] = l
          elseif l:match("^@param") then
            local pname, opt, ptype, pdesc = l:match("^@param%s+([%w_.]+)(%??)%s+(%S+)%s*(.*)$")
            e.params[#e.params + 1] = {name = pname or trim(l:sub(7)), optional = opt == "?", type = ptype,
                                       desc = pdesc}
          elseif l:match("^@return") then
            local rtype, rdesc = l:match("^@return%s+(%S+)%s*(.*)$")
            e.returns[#e.returns + 1] = {type = rtype, desc = rdesc}
          elseif l:match("^Example:%s*`") then
            e.example[#e.example + 1] = l:match("^Example:%s*`(.*)`%s*$") or l:match("^Example:%s*`(.*)$")
          elseif l:match("^Example:%s*$") then -- a fenced example follows
            e.example = e.example -- nothing to keep from the heading itself
          elseif l:sub(1, 1) ~= "@" then
            e.desc[#e.desc + 1] = l
          end
        end
        while #e.desc > 0 and trim(e.desc[#e.desc]) == "" do e.desc[#e.desc] = nil end
        out.functions[name] = e
        out.order[#out.order + 1] = name
      elseif #block > 0 then
        for i, raw in ipairs(block) do block[i] = raw:gsub("^ ", "", 1) end
        flush_class(block)
      end
      block = {}
    end
  end
  return out
end

local parsed
--- The parsed documentation (cached).
function M.docs()
  if not parsed then
    local src = M.source()
    parsed = src and M.parse(src) or {functions = {}, classes = {}, order = {}}
  end
  return parsed
end

--- Every name under which a function is reachable from the module: {[f] = {"ms.zeros", ...}}.
function M.names(ms)
  local names, open = {}, {}
  local function walk(t, prefix)
    if open[t] then return end -- a cycle; a table reachable by two paths is walked twice
    open[t] = true
    local keys = {}
    for k in pairs(t) do if type(k) == "string" and k:sub(1, 1) ~= "_" then keys[#keys + 1] = k end end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local v = t[k]
      if type(v) == "function" then
        names[v] = names[v] or {}
        table.insert(names[v], prefix .. k)
      elseif type(v) == "table" and k ~= "core" and not k:find("_mt$") then
        walk(v, prefix .. k .. ".")
      end
    end
    open[t] = nil
  end
  walk(ms, "ms.")
  return names
end

--- The documentation entry of a function (or of a name such as "meta.train"), or nil.
function M.entry(what)
  local docs = M.docs()
  if type(what) == "string" then
    return docs.functions[what] or docs.functions["ms." .. what]
  end
  local list = M.names(require "metastep")[what]
  for _, name in ipairs(list or {}) do
    if docs.functions[name] then return docs.functions[name], list end
  end
  return nil, list
end

-- "name type  description" lines of fields or parameters, aligned.
local function aligned(rows, indent)
  local w1, w2 = 0, 0
  for _, r in ipairs(rows) do w1, w2 = math.max(w1, #r[1]), math.max(w2, #r[2]) end
  local function pad(s, w) return s .. (" "):rep(w - #s) end
  local lines = {}
  for _, r in ipairs(rows) do
    local cols = {pad(r[1], w1)}
    if w2 > 0 then cols[#cols + 1] = pad(r[2], w2) end
    cols[#cols + 1] = r[3]
    lines[#lines + 1] = (indent .. table.concat(cols, "  ")):gsub("%s+$", "")
  end
  return lines
end

--- The text help(f) prints for an entry: signature, description, parameters, the options of
-- an options-table parameter (fields with their defaults), returns, example.
function M.format(e, aliases)
  local docs = M.docs()
  local lines = {e.signature, ""}
  for _, l in ipairs(e.desc) do lines[#lines + 1] = "  " .. l end
  if #e.params > 0 then
    lines[#lines + 1] = ""
    lines[#lines + 1] = "Parameters:"
    local rows = {}
    for _, p in ipairs(e.params) do
      rows[#rows + 1] = {p.name .. (p.optional and "?" or ""), p.type or "", p.desc or ""}
    end
    for _, l in ipairs(aligned(rows, "  ")) do lines[#lines + 1] = l end
    for _, p in ipairs(e.params) do
      local class = p.type and docs.classes[p.type:gsub("[?|].*$", "")]
      if class and #class.fields > 0 then
        lines[#lines + 1] = ""
        lines[#lines + 1] = ("Options (%s, a table):"):format(p.name)
        local frows = {}
        local depth, seen = 0, {}
        while class and depth < 4 do -- the class's fields, then its parent's ("@class A : B")
          for _, f in ipairs(class.fields) do -- a field the class redefines hides the parent's
            if not seen[f.name] then frows[#frows + 1] = {f.name, f.type, f.desc} end
            seen[f.name] = true
          end
          class, depth = class.parent and docs.classes[class.parent], depth + 1
        end
        for _, l in ipairs(aligned(frows, "  ")) do lines[#lines + 1] = l end
      end
    end
  end
  if #e.returns > 0 then
    lines[#lines + 1] = ""
    lines[#lines + 1] = "Returns:"
    local rows = {}
    for _, r in ipairs(e.returns) do rows[#rows + 1] = {r.type, "", r.desc or ""} end
    for _, l in ipairs(aligned(rows, "  ")) do lines[#lines + 1] = l end
  end
  if #e.example > 0 then
    lines[#lines + 1] = ""
    lines[#lines + 1] = "Example:"
    for _, l in ipairs(e.example) do lines[#lines + 1] = "  " .. l end
  end
  if aliases and #aliases > 1 then
    lines[#lines + 1] = ""
    lines[#lines + 1] = "Also reachable as: " .. table.concat(aliases, ", ")
  end
  return table.concat(lines, "\n")
end

--- The help text of a function, or nil and a reason.
function M.text(what)
  local e, aliases = M.entry(what)
  if not e then
    if type(what) == "function" and aliases then
      return nil, ("%s has no documentation entry in metastep/doc.lua"):format(aliases[1])
    end
    return nil, type(what) == "function" and "not a function of metastep" or nil
  end
  return M.format(e, aliases)
end

return M
