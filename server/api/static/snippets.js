// "Copy as cURL / Python": the exact request the form sends, as a command and a script.
// A start image picked from disk travels as a data: URI; the snippets rebuild it from the file
// (a multi-megabyte string would bury the request), everything else is byte-for-byte the body.

function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

/** A JSON value as a Python literal (True/False/None, dicts and lists indented like the JSON). */
export function pythonLiteral(value, indent = "") {
  const inner = `${indent}    `;
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return String(value);
  if (typeof value === "string") return JSON.stringify(value); // a JSON string is a valid Python string
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return `[\n${value.map((item) => inner + pythonLiteral(item, inner)).join(",\n")},\n${indent}]`;
  }
  const entries = Object.entries(value);
  if (!entries.length) return "{}";
  return `{\n${entries.map(([key, item]) => `${inner}${JSON.stringify(key)}: ${pythonLiteral(item, inner)}`).join(",\n")},\n${indent}}`;
}

/**
 * The two snippets for a request: `endpoint` is the full URL, `body` the JSON body, `image` the
 * picked file ({name, mime}) when input_image is a data: URI built from it, `withKey` when the
 * server needs an API key (read from $LTX_API_KEY: the key itself is never written out).
 */
export function requestSnippets({ endpoint, body, image, withKey }) {
  const fromFile = Boolean(image) && typeof body.input_image === "string" && body.input_image.startsWith("data:");
  const shown = fromFile ? { ...body, input_image: `<${image.name} as a data: URI>` } : body;
  const json = JSON.stringify(shown, null, 2);
  const curlLines = [`curl -X POST ${shellQuote(endpoint)}`, `  -H 'Content-Type: application/json'`];
  if (withKey) curlLines.push(`  -H "Authorization: Bearer $LTX_API_KEY"`);
  curlLines.push("  --data-binary @-");
  let curl;
  if (fromFile) {
    curl = [
      `# ${image.name} becomes the data: URI in input_image (jq builds the body).`,
      `jq -c --rawfile b64 <(base64 -w0 ${shellQuote(image.name)}) \\`,
      `  '.input_image = "data:${image.mime};base64," + $b64' <<'JSON' |`,
      json,
      "JSON",
      curlLines.join(" \\\n"),
    ].join("\n");
  } else {
    curl = `${curlLines.join(" \\\n")} <<'JSON'\n${json}\nJSON`;
  }
  const imports = [fromFile && "import base64", withKey && "import os"].filter(Boolean);
  const python = [...imports, ...(imports.length ? [""] : []), "import requests", ""];
  python.push(`URL = ${JSON.stringify(endpoint)}`);
  python.push(withKey ? 'HEADERS = {"Authorization": f"Bearer {os.environ[\'LTX_API_KEY\']}"}' : "HEADERS = {}");
  python.push("", `body = ${pythonLiteral(shown)}`);
  if (fromFile) {
    python.push(`with open(${JSON.stringify(image.name)}, "rb") as start_image:`);
    python.push(`    body["input_image"] = "data:${image.mime};base64," + base64.b64encode(start_image.read()).decode()`);
  }
  python.push(
    "response = requests.post(URL, headers=HEADERS, json=body, timeout=60)",
    "response.raise_for_status()",
    'print(response.json()["generations"][0]["generation_id"])',
  );
  return { curl, python: python.join("\n") };
}
