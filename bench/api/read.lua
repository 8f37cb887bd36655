-- wrk script: GET with a bearer token from TOKEN (the peer ignores it).
function init(args)
  local token = os.getenv("TOKEN")
  if token and token ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. token
  end
end
