-- The web client (web/), served by HAProxy itself (haproxy.cfg's lua-load and use-service):
-- every file of the folder with one of the types below is read once, at start, and answered
-- from memory; a new file needs no line of configuration. The folder is HAPROXY_WEB_ROOT, by
-- default ../../web from haproxy.cfg's folder (Lua runs while HAProxy reads its config, in
-- that folder: default-path config). Its node_modules (eslint, for `make lint`) and files of
-- other types (package.json, eslint.config.mjs) are never served. A folder without
-- index.html stops HAProxy from starting.

local root = (os.getenv("HAPROXY_WEB_ROOT") or "../../web"):gsub("(.)/+$", "%1")

-- Types a browser needs: a module with any other type is refused under nosniff.
local content_types = {
    html = "text/html; charset=utf-8",
    css = "text/css; charset=utf-8",
    js = "text/javascript; charset=utf-8",
    svg = "image/svg+xml",
}

local function shell_quoted(text)
    return "'" .. text:gsub("'", "'\\''") .. "'"
end

local function read_whole(path)
    local file = assert(io.open(path, "rb"))
    local body = file:read("a")
    file:close()
    return body
end

-- URL path ("/js/main.js") -> {body, content_type}
local files = {}
-- Symbolic links are followed and names starting with ".." left out: a Kubernetes ConfigMap
-- volume holds each file as a link into a hidden "..<timestamp>" folder of the real ones.
local listing = assert(
    io.popen("find -L " .. shell_quoted(root) .. " \\( -name node_modules -o -name '..?*' \\) -prune -o -type f -print")
)
for path in listing:lines() do
    local content_type = content_types[path:match("%.(%w+)$")]
    if content_type then
        files[path:sub(#root + 1)] = { body = read_whole(path), content_type = content_type }
    end
end
listing:close()
if not files["/index.html"] then
    error("the web client's folder " .. root .. " (HAPROXY_WEB_ROOT) has no index.html")
end
files["/"] = files["/index.html"]

-- lua.web_file: whether the request's path is one of the files (the frontend's condition).
core.register_fetches("web_file", function(txn)
    return files[txn.sf:path()] ~= nil
end)

-- File names carry no version, so browsers revalidate each time (no-cache) and never pair
-- an old module with a new page.
core.register_service("web_client", "http", function(applet)
    local file = files[applet.path]
    applet:set_status(200)
    applet:add_header("content-type", file.content_type)
    applet:add_header("content-length", tostring(#file.body))
    applet:add_header("cache-control", "no-cache")
    applet:start_response()
    if applet.method ~= "HEAD" then
        applet:send(file.body)
    end
end)
