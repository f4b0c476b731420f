/**
 * RFC 4180 CSV: comma-separated, double-quoted fields may hold commas, quotes ("") and newlines.
 * Quoting is strict: a quote opens a field only at its start, and a closing quote must be followed
 * by a comma or the end of the line; anything else is an error naming the file and line, since
 * gluing stray text onto a field would silently change a question or an answer.
 *
 * Line ends: CRLF, LF and a lone CR all end a record, and inside a quoted field each is read as
 * LF, so a file saved with old Mac line ends gives the same questions, byte for byte, as its LF
 * twin and errors count physical lines. (RFC 4180 writes CRLF; a CR alone is never text a
 * benchmark means.) A NUL character is refused with the file, line and field: no benchmark text
 * holds one, and it marks a binary or mis-encoded file.
 */

/** Rows of fields; `source` names the file in errors (stray or unterminated quotes). */
export function parseCsv(text: string, source = "csv"): string[][] {
  return parseCsvRecords(text, source).map((r) => r.fields);
}

/** One record of a CSV file and the physical line it starts on (1-based). */
export interface CsvRecord {
  /** The record's fields. */
  fields: string[];
  /** Where the record starts (a quoted field may span lines). */
  line: number;
}

/** Records with their starting lines, as {@link parseCsv} reads them. */
export function parseCsvRecords(text: string, source = "csv"): CsvRecord[] {
  const rows: CsvRecord[] = [];
  let rowLine = 1;
  let row: string[] = [];
  let field = "";
  let quoted = false;
  let closed = false; // the field was quoted and its closing quote has been read
  let line = 1;
  let quoteLine = 1; // where the open quoted field began
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === "\u0000") {
      throw new Error(`${source}: line ${line}: field ${row.length + 1}: NUL character`);
    }
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') {
        quoted = false;
        closed = true;
      } else if (ch === "\n" || ch === "\r") {
        if (ch === "\r" && text[i + 1] === "\n") i++;
        line++;
        field += "\n";
      } else field += ch;
    } else if (ch === ",") {
      row.push(field);
      field = "";
      closed = false;
    } else if (ch === "\n" || ch === "\r") {
      if (ch === "\r" && text[i + 1] === "\n") i++;
      row.push(field);
      rows.push({ fields: row, line: rowLine });
      row = [];
      field = "";
      closed = false;
      line++;
      rowLine = line;
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
    rows.push({ fields: row, line: rowLine });
  }
  return rows;
}
