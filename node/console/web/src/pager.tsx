// Paging and table placeholders shared by the console's lists.

/** Pager steps through a list paged by cursor: pages holds the cursor of
 * each page shown after the first, next the cursor of the following page
 * (empty when none). */
export function Pager({
  pages,
  setPages,
  next,
  back,
  forward,
  testId,
}: {
  pages: string[];
  setPages: (p: string[]) => void;
  next: string | undefined;
  back: string;
  forward: string;
  testId: string;
}) {
  return (
    <div class="pager">
      <button type="button" disabled={pages.length === 0} onClick={() => setPages(pages.slice(0, -1))}>
        ‹ {back}
      </button>
      <span class="muted">page {pages.length + 1}</span>
      <button type="button" data-test={testId} disabled={!next} onClick={() => next && setPages([...pages, next])}>
        {forward} ›
      </button>
    </div>
  );
}

/** StatusRow is a table's whole-width row saying it is loading or empty. */
export function StatusRow({ cols, text }: { cols: number; text: string }) {
  return (
    <tr>
      <td colSpan={cols} class="muted">
        {text}
      </td>
    </tr>
  );
}
