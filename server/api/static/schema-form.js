// A form generated from the model's request schema (JSON Schema, as /api/ai/models/{id} publishes it):
// every property gets a control with its title, description, default and range, so a new parameter
// on the server appears here without touching the page. Types it has no control for (arrays,
// objects, unions) get a JSON text area in the "Advanced" section.

let uid = 0;

function deref(schema, root) {
  let node = schema || {};
  for (let hops = 0; node.$ref && hops < 8; hops++) {
    const path = node.$ref.replace(/^#\//, "").split("/");
    node = path.reduce((at, key) => (at ? at[key] : undefined), root) || {};
  }
  return node;
}

/** What control a property gets: {kind, type, nullable, enum, min, max, examples}. */
export function describeProperty(prop, root) {
  let node = deref(prop, root);
  let nullable = false;
  const union = node.anyOf || node.oneOf;
  if (union) {
    const options = union.map((option) => deref(option, root));
    const concrete = options.filter((option) => option.type !== "null");
    nullable = concrete.length < options.length;
    node = concrete.length === 1 ? { ...concrete[0], ...withoutUnion(node) } : { ...node, type: "json" };
  }
  if (Array.isArray(node.type)) { // {"type": ["integer", "null"]}
    const types = node.type.filter((name) => name !== "null");
    nullable = nullable || types.length < node.type.length;
    node = { ...node, type: types.length === 1 ? types[0] : "json" };
  }
  const info = { nullable, type: node.type, enum: node.enum, min: node.minimum ?? node.exclusiveMinimum,
    max: node.maximum ?? node.exclusiveMaximum, examples: node.examples };
  if (Array.isArray(node.enum)) info.kind = "select";
  else if (node.type === "boolean") info.kind = "checkbox";
  else if (node.type === "integer" || node.type === "number") info.kind = "number";
  else if (node.type === "string") {
    const long = typeof prop.default === "string" && prop.default.length > 80;
    info.kind = long || /prompt/i.test(prop.title || "") ? "textarea" : "text";
  } else info.kind = "json";
  return info;
}

function withoutUnion(node) {
  const { anyOf, oneOf, ...rest } = node; // eslint-disable-line no-unused-vars
  return rest;
}

function rangeText(info, prop) {
  const parts = [];
  // A bound past what a JavaScript number holds exactly (the seed's 2^63-1) is not worth printing.
  if (info.max !== undefined && Math.abs(info.max) > Number.MAX_SAFE_INTEGER) info = { ...info, max: undefined };
  if (info.min !== undefined && info.max !== undefined) parts.push(`${info.min}–${info.max}`);
  else if (info.min !== undefined) parts.push(`at least ${info.min}`);
  else if (info.max !== undefined) parts.push(`at most ${info.max}`);
  if (prop.default !== undefined && prop.default !== null && info.kind !== "textarea" && info.kind !== "json") {
    parts.push(`default ${prop.default}`);
  }
  if (info.nullable && (prop.default === null || prop.default === undefined)) parts.push("empty: chosen by the server");
  return parts.join(" · ");
}

function sameValue(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** One schema property as a labelled control with its help text. */
class Field {
  constructor(name, prop, root) {
    this.name = name;
    this.prop = prop;
    this.info = describeProperty(prop, root);
    this.label = prop.title || name;
    this.element = document.createElement("div");
    this.element.className = `field ${this.info.kind}`;
    this.element.dataset.param = name;
    const id = `param-${name}`;
    const helpId = `${id}-help`;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = this.label;
    this.control = this.makeControl();
    this.control.id = id;
    this.control.name = name;
    this.control.setAttribute("aria-describedby", helpId);
    const help = document.createElement("p");
    help.className = "help";
    help.id = helpId;
    const range = rangeText(this.info, prop);
    help.textContent = [prop.description, range && `(${range})`].filter(Boolean).join(" ");
    if (this.info.kind === "checkbox") this.element.append(this.control, label, help);
    else this.element.append(label, this.control, help);
    if (this.datalist) this.element.append(this.datalist);
    this.reset();
  }

  get advanced() {
    return this.info.kind === "json" || this.info.kind === "textarea";
  }

  makeControl() {
    const { kind, enum: options, nullable, min, max, type, examples } = this.info;
    if (kind === "select") {
      const select = document.createElement("select");
      if (nullable) select.append(new Option("(none)", ""));
      for (const option of options) select.append(new Option(String(option), JSON.stringify(option)));
      return select;
    }
    if (kind === "checkbox") {
      const box = document.createElement("input");
      box.type = "checkbox";
      return box;
    }
    if (kind === "number") {
      const input = document.createElement("input");
      input.type = "number";
      input.inputMode = type === "integer" ? "numeric" : "decimal";
      input.step = type === "integer" ? "1" : "any";
      if (min !== undefined && Number.isSafeInteger(Math.trunc(min))) input.min = String(min);
      if (max !== undefined && Math.abs(max) <= Number.MAX_SAFE_INTEGER) input.max = String(max);
      if (nullable) input.placeholder = "random / none";
      return input;
    }
    if (kind === "text") {
      const input = document.createElement("input");
      input.type = "text";
      input.autocomplete = "off";
      if (Array.isArray(examples) && examples.length) {
        this.datalist = document.createElement("datalist");
        this.datalist.id = `param-${this.name}-options-${uid++}`;
        for (const example of examples) this.datalist.append(new Option(String(example)));
        input.setAttribute("list", this.datalist.id);
      }
      return input;
    }
    const area = document.createElement("textarea");
    area.rows = kind === "json" ? 4 : 3;
    area.spellcheck = kind !== "json";
    if (kind === "json") area.className = "json-input";
    return area;
  }

  reset() {
    this.set(this.prop.default);
  }

  set(value) {
    const { kind } = this.info;
    if (kind === "checkbox") this.control.checked = Boolean(value);
    else if (kind === "select") this.control.value = value === null || value === undefined ? "" : JSON.stringify(value);
    else if (kind === "json") this.control.value = value === undefined || value === null ? "" : JSON.stringify(value, null, 2);
    else this.control.value = value === null || value === undefined ? "" : String(value);
  }

  /** {value} to send, {omit: true} when it is the default (or empty), or {error}. */
  read() {
    const { kind, type } = this.info;
    const raw = this.control.value;
    let value;
    if (kind === "checkbox") value = this.control.checked;
    else if (kind === "select") value = raw === "" ? null : JSON.parse(raw);
    else if (kind === "number") {
      if (raw.trim() === "") return { omit: true }; // empty: the server's default (or its choice, for a seed)
      value = Number(raw);
      if (!Number.isFinite(value) || (type === "integer" && !Number.isInteger(value))) {
        return { error: `${this.label}: must be ${type === "integer" ? "a whole number" : "a number"}.` };
      }
    } else if (kind === "json") {
      if (raw.trim() === "") return { omit: true };
      try {
        value = JSON.parse(raw);
      } catch (error) {
        return { error: `${this.label}: not valid JSON (${error.message}).` };
      }
    } else {
      // an empty text box of an optional field (a URL such as end_image) means "not given"
      if (raw === "" && this.info.nullable) return { omit: true };
      value = raw;
    }
    if (this.prop.default !== undefined && sameValue(value, this.prop.default)) return { omit: true };
    return { value };
  }
}

/** Builds the controls for every property of `schema` not in `skip`, in the schema's order. */
export class SchemaForm {
  constructor(container, schema, skip) {
    this.fields = new Map();
    container.replaceChildren();
    const entries = Object.entries(schema.properties || {}).filter(([name]) => !skip.includes(name));
    entries.sort(([, a], [, b]) => (a["x-order"] ?? 1e9) - (b["x-order"] ?? 1e9));
    const basic = document.createElement("div");
    basic.className = "params-basic";
    this.advanced = document.createElement("details");
    this.advanced.className = "params-advanced";
    const summary = document.createElement("summary");
    summary.textContent = "Advanced";
    this.advanced.append(summary);
    for (const [name, prop] of entries) {
      const field = new Field(name, prop, schema);
      this.fields.set(name, field);
      (field.advanced ? this.advanced : basic).append(field.element);
    }
    container.append(basic);
    if (this.advanced.children.length > 1) container.append(this.advanced);
  }

  /** {values, errors}: only what differs from the schema's defaults goes into values. */
  read() {
    const values = {};
    const errors = [];
    for (const [name, field] of this.fields) {
      const result = field.read();
      if (result.error) errors.push(result.error);
      else if (!result.omit) values[name] = result.value;
    }
    return { values, errors };
  }

  /** Sets the fields named in `values` (unknown names are ignored); opens Advanced if one of its fields changed. */
  apply(values) {
    for (const [name, value] of Object.entries(values)) {
      const field = this.fields.get(name);
      if (!field) continue;
      field.set(value);
      if (field.advanced && !sameValue(value, field.prop.default)) this.advanced.open = true;
    }
  }

  labelOf(name) {
    return this.fields.get(name)?.label || name;
  }
}
