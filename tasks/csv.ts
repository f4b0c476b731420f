/** RFC 4180 CSV: comma-separated, double-quoted fields may hold commas, quotes ("") and newlines. */

/** Rows of fields; `source` names the file in errors (an unterminated quote). */
export function parseCsv(text: string, source = "csv"): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = "";
  let quoted = false;
  let line = 1;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else {
        if (ch === "\n") line++;
        field += ch;
      }
    } else if (ch === '"' && field === "") quoted = true;
    else if (ch === ",") {
      row.push(field);
      field = "";
    } else if (ch === "\n" || ch === "\r") {
      if (ch === "\r" && text[i + 1] === "\n") i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
      line++;
    } else field += ch;
  }
  if (quoted) throw new Error(`${source}: unterminated quoted field (line ${line})`);
  if (field !== "" || row.length) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}
