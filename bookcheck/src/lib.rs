//! Checks a built mdbook as a reader sees it, in Debian's chromium:
//!
//! - every mermaid diagram has become an SVG, and none shows mermaid's
//!   "Syntax error";
//! - every image has loaded, with a non-zero size;
//! - at 1280 px, no page scrolls sideways, and no listing or table is wider
//!   than its box;
//! - every internal link and `#anchor` resolves;
//! - the search box finds a chapter by a word in it.
//!
//! A failed check names the page and saves a screenshot.

mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};

/// The window the checks use: a laptop's.
pub const WIDTH: u32 = 1280;
/// Pages that are not chapters: the all-in-one print page repeats every
/// chapter, the others are fallbacks.
const NOT_CHAPTERS: &[&str] = &["print.html", "toc.html", "404.html"];
/// How long mermaid may take to draw a page's diagrams.
const RENDER_LIMIT: Duration = Duration::from_secs(10);

/// One thing wrong with one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The page, relative to the book's root (`etcd-lock.html`).
    pub page: String,
    /// Which check failed, and how.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.page, self.what)
    }
}

/// A word to search for, and the page the search must find.
#[derive(Debug, Clone)]
pub struct SearchProbe {
    /// The word typed into the search box.
    pub word: String,
    /// The page that must be among the results.
    pub page: String,
}

/// Runs every check on the book built in `book` (mdbook's output folder).
/// Screenshots of failing pages go to `screenshots`.
pub fn check(
    book: &Path,
    search: Option<&SearchProbe>,
    screenshots: &Path,
) -> anyhow::Result<Vec<Problem>> {
    let addr = server::serve(book)?;
    let origin = format!("http://{addr}");
    let browser = launch(WIDTH)?;
    let tab = browser.new_tab()?;
    let mut problems = Vec::new();
    let mut links: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for page in pages(book)? {
        let url = format!("{origin}/{page}");
        tab.navigate_to(&url)?.wait_until_navigated()?;
        wait_for_diagrams(&tab)?;
        let found = page_problems(&tab)?;
        let failed = !found.is_empty();
        problems.extend(found.into_iter().map(|what| Problem {
            page: page.clone(),
            what,
        }));
        for link in page_links(&tab)? {
            if let Some(rest) = link.strip_prefix(&origin) {
                links
                    .entry(rest.to_string())
                    .or_default()
                    .insert(page.clone());
            }
        }
        if failed {
            screenshot(&tab, &screenshots.join(page.replace('/', "_") + ".png"))?;
        }
    }
    for (link, from) in links {
        if let Some(what) = broken_link(book, &link) {
            for page in from {
                problems.push(Problem {
                    page,
                    what: what.clone(),
                });
            }
        }
    }
    if let Some(probe) = search {
        tab.navigate_to(&format!("{origin}/index.html"))?
            .wait_until_navigated()?;
        if !search_finds(&tab, probe)? {
            problems.push(Problem {
                page: "index.html".into(),
                what: format!("search: `{}` does not find {}", probe.word, probe.page),
            });
            screenshot(&tab, &screenshots.join("search.png"))?;
        }
    }
    Ok(problems)
}

/// Saves a screenshot of every chapter at `width`, to look at.
pub fn screenshots(
    book: &Path,
    width: u32,
    folder: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let addr = server::serve(book)?;
    let browser = launch(width)?;
    let tab = browser.new_tab()?;
    let mut saved = Vec::new();
    for page in pages(book)? {
        tab.navigate_to(&format!("http://{addr}/{page}"))?
            .wait_until_navigated()?;
        wait_for_diagrams(&tab)?;
        let name = page.trim_end_matches(".html").replace('/', "_");
        let file = folder.join(format!("{name}-{width}.png"));
        screenshot(&tab, &file)?;
        saved.push(file);
        // Each diagram on its own, scrolled into view: the ones to look at.
        let count = "JSON.stringify(document.querySelectorAll('pre.mermaid').length)";
        let diagrams = evaluate(&tab, count)?.as_u64().unwrap_or(0);
        for index in 0..diagrams {
            let scroll = format!(
                "JSON.stringify(document.querySelectorAll('pre.mermaid')[{index}]\
                 .scrollIntoView({{block: 'center'}}))"
            );
            let _ = evaluate(&tab, &scroll);
            let file = folder.join(format!("{name}-diagram{}-{width}.png", index + 1));
            screenshot(&tab, &file)?;
            saved.push(file);
        }
    }
    Ok(saved)
}

fn launch(width: u32) -> anyhow::Result<Browser> {
    let chromium =
        testkit::find_binary(testkit::Binary::Chromium).map_err(|e| anyhow!("{e}"))?;
    let options = LaunchOptions::default_builder()
        .path(Some(chromium))
        .window_size(Some((width, 900)))
        // As root (CI), chromium refuses to start sandboxed.
        .sandbox(false)
        .idle_browser_timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| anyhow!("chromium options: {e}"))?;
    Browser::new(options).context("starting chromium")
}

/// The book's pages, relative to its root, sorted.
fn pages(book: &Path) -> anyhow::Result<Vec<String>> {
    let mut pages = Vec::new();
    collect_pages(book, book, &mut pages)?;
    pages.sort();
    Ok(pages)
}

fn collect_pages(
    root: &Path,
    dir: &Path,
    pages: &mut Vec<String>,
) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_pages(root, &path, pages)?;
        } else if path.extension().is_some_and(|e| e == "html") {
            let relative = path.strip_prefix(root)?.to_string_lossy().to_string();
            if !NOT_CHAPTERS.contains(&relative.as_str()) {
                pages.push(relative);
            }
        }
    }
    Ok(())
}

fn evaluate(tab: &Arc<Tab>, script: &str) -> anyhow::Result<serde_json::Value> {
    let result = tab.evaluate(script, false)?;
    let text = result
        .value
        .and_then(|v| v.as_str().map(str::to_string))
        .ok_or_else(|| anyhow!("the page's script returned nothing"))?;
    Ok(serde_json::from_str(&text)?)
}

/// Waits until every mermaid block has an SVG (a drawing or mermaid's
/// error drawing), or the limit passes (then the check reports it).
fn wait_for_diagrams(tab: &Arc<Tab>) -> anyhow::Result<()> {
    let deadline = Instant::now() + RENDER_LIMIT;
    while Instant::now() < deadline {
        let pending = evaluate(
            tab,
            "JSON.stringify([...document.querySelectorAll('pre.mermaid')]\
             .filter(p => !p.querySelector('svg')).length)",
        )?;
        if pending.as_u64() == Some(0) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The checks that look at one loaded page.
const PAGE_CHECKS: &str = r#"JSON.stringify((() => {
  const problems = [];
  document.querySelectorAll('pre.mermaid').forEach((pre, i) => {
    if (!pre.querySelector('svg')) problems.push(`diagram ${i + 1} did not render`);
    else if (pre.textContent.includes('Syntax error'))
      problems.push(`diagram ${i + 1} shows mermaid's syntax error`);
  });
  if (document.body.textContent.includes('Syntax error in text') &&
      !problems.some(p => p.includes('syntax error')))
    problems.push("mermaid's syntax error is shown");
  document.querySelectorAll('img').forEach(img => {
    if (!img.complete || img.naturalWidth === 0)
      problems.push(`image did not load: ${img.getAttribute('src')}`);
  });
  const page = document.scrollingElement;
  if (page.scrollWidth > page.clientWidth + 1)
    problems.push(`the page scrolls sideways (${page.scrollWidth} px wide in ${page.clientWidth})`);
  document.querySelectorAll('pre > code').forEach(code => {
    if (code.scrollWidth > code.clientWidth + 1) {
      const lines = code.innerText.split('\n');
      const longest = lines.reduce((a, b) => (b.length > a.length ? b : a), '');
      problems.push(`listing wider than its box (${code.scrollWidth} px in ${code.clientWidth}): ${longest.trim().slice(0, 100)}`);
    }
  });
  document.querySelectorAll('.table-wrapper').forEach(wrapper => {
    if (wrapper.scrollWidth > wrapper.clientWidth + 1) {
      const head = wrapper.querySelector('tr');
      problems.push(`table wider than the column: ${head ? head.innerText.replace(/\s+/g, ' ').slice(0, 80) : ''}`);
    }
  });
  return problems;
})())"#;

fn page_problems(tab: &Arc<Tab>) -> anyhow::Result<Vec<String>> {
    let found = evaluate(tab, PAGE_CHECKS)?;
    Ok(found
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

fn page_links(tab: &Arc<Tab>) -> anyhow::Result<Vec<String>> {
    let found = evaluate(
        tab,
        "JSON.stringify([...document.querySelectorAll('a[href]')].map(a => a.href))",
    )?;
    Ok(found
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|l| l.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// Why `link` (a path on the book's server, maybe with `#anchor`) does not
/// resolve, if it does not.
fn broken_link(book: &Path, link: &str) -> Option<String> {
    let (path, anchor) = match link.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (link, None),
    };
    let path = path.split('?').next().unwrap_or(path);
    let Some(file) = server::file_for(book, path) else {
        return Some(format!("broken link: {link}"));
    };
    let anchor = anchor.filter(|a| !a.is_empty())?;
    let html = std::fs::read_to_string(&file).ok()?;
    let decoded = anchor.replace("%20", " ");
    let has = |id: &str| html.contains(&format!("id=\"{id}\""));
    (!has(anchor) && !has(&decoded)).then(|| format!("broken anchor: {link}"))
}

fn search_finds(tab: &Arc<Tab>, probe: &SearchProbe) -> anyhow::Result<bool> {
    let word = serde_json::to_string(&probe.word)?;
    evaluate(
        tab,
        &format!(
            "JSON.stringify((() => {{
               document.getElementById('mdbook-search-toggle').click();
               const bar = document.getElementById('mdbook-searchbar');
               bar.value = {word};
               bar.dispatchEvent(new KeyboardEvent('keyup', {{ key: 'a' }}));
               bar.dispatchEvent(new Event('input'));
               return true;
             }})())"
        ),
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let target = serde_json::to_string(&probe.page)?;
    while Instant::now() < deadline {
        let found = evaluate(
            tab,
            &format!(
                "JSON.stringify([...document.querySelectorAll('#mdbook-searchresults a')]\
                 .some(a => a.getAttribute('href').split(/[?#]/)[0].endsWith({target})))"
            ),
        )?;
        if found.as_bool() == Some(true) {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(false)
}

fn screenshot(tab: &Arc<Tab>, file: &Path) -> anyhow::Result<()> {
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let png =
        tab.capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)?;
    std::fs::write(file, png)?;
    Ok(())
}
