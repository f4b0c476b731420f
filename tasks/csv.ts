/**
 * RFC 4180 CSV: comma-separated, double-quoted fields may hold commas, quotes ("") and newlines.
 * Quoting is strict: a quote opens a field only at its start, and a closing quote must be followed
 * by a comma or the end of the line; anything else is an error naming the file and line, since
 * gluing stray text onto a field would silently change a question or an answer.
 */

/** Rows of fields; `source` names the file in errors (stray or unterminated quotes). */
export function parseCsv(text: string, source = "csv"): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = "";
  let quoted = false;
  let closed = false; // the field was quoted and its closing quote has been read
  let line = 1;
  let quoteLine = 1; // where the open quoted field began
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') {
        quoted = false;
        closed = true;
      } else {
        if (ch === "\n") line++;
        field += ch;
      }
    } else if (ch === ",") {
      row.push(field);
      field = "";
      closed = false;
    } else if (ch === "\n" || ch === "\r") {
      if (ch === "\r" && text[i + 1] === "\n") i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
      closed = false;
      line++;
    } else if (closed) {
      throw new Error(
        `${source}: line ${line}: text after a closing quote (field ${row.length + 1})`,
      );
    } else if (ch === '"') {
      if (field !== "") {
        throw new Error(
          `${source}: line ${line}: quote inside an unquoted field (field ${row.length + 1})`,
        );
      }
      quoted = true;
      quoteLine = line;
    } else field += ch;
  }
  if (quoted) {
    throw new Error(`${source}: line ${quoteLine}: unterminated quoted field`);
  }
  if (field !== "" || closed || row.length) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}
