// PNG line charts with cairo: panels stacked vertically, each with a title, a legend
// row, axes with "nice" ticks (1, 2, 5 x 10^k), grid lines, dashed vertical markers
// and one colour per series (the tab10 palette, in order: #1f77b4 blue, #ff7f0e
// orange, #2ca02c green, #d62728 red, #9467bd purple, #8c564b brown, #e377c2 pink,
// #7f7f7f grey, #bcbd22 olive, #17becf cyan; then it repeats).
#include "launcher/plot.h"

#include <cairo.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>

#include "runtime/check.h"

namespace coconut::launcher {

namespace {

struct Rgb {
  double r, g, b;
};

Rgb series_colour(size_t i) {
  static const unsigned kPalette[] = {0x1f77b4, 0xff7f0e, 0x2ca02c, 0xd62728, 0x9467bd,
                                      0x8c564b, 0xe377c2, 0x7f7f7f, 0xbcbd22, 0x17becf};
  const unsigned c = kPalette[i % std::size(kPalette)];
  return {((c >> 16) & 0xff) / 255.0, ((c >> 8) & 0xff) / 255.0, (c & 0xff) / 255.0};
}

// Layout constants, in pixels.
constexpr double kLeft = 78, kRight = 24, kTitle = 28, kLegendRow = 18, kBottom = 48;
constexpr double kFont = 12, kTitleFont = 14;
constexpr double kInset = 8;

// An axis range extended to multiples of a nice step, with the step.
struct Axis {
  double lo, hi, step;
};

Axis nice_axis(double lo, double hi) {
  if (!(lo < hi)) {  // one value (or none): centre it in a unit-sized range
    const double pad = lo == 0 ? 1.0 : std::abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / 5;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = 10 * mag;
  for (double m : {1.0, 2.0, 5.0})
    if (raw <= m * mag) {
      step = m * mag;
      break;
    }
  return {std::floor(lo / step + 1e-9) * step, std::ceil(hi / step - 1e-9) * step, step};
}

std::string tick_label(double v, double step) {
  if (std::abs(v) < step * 1e-6) v = 0;  // no "-0" from rounding
  const double a = std::max(std::abs(v), step);
  if (a >= 1e6 || a < 1e-4) return fmt::format("{:.3g}", v);
  const int decimals = std::max(0, static_cast<int>(-std::floor(std::log10(step) + 1e-9)));
  return fmt::format("{:.{}f}", v, decimals);
}

void set_rgb(cairo_t* cr, const Rgb& c) { cairo_set_source_rgb(cr, c.r, c.g, c.b); }

// Text anchored at (x, y): ax/ay = 0 left/top, 0.5 centre, 1 right/bottom.
void text_at(cairo_t* cr, const std::string& s, double x, double y, double ax, double ay) {
  cairo_text_extents_t e;
  cairo_text_extents(cr, s.c_str(), &e);
  cairo_move_to(cr, x - e.x_bearing - ax * e.width, y - e.y_bearing - ay * e.height);
  cairo_show_text(cr, s.c_str());
}

double text_width(cairo_t* cr, const std::string& s) {
  cairo_text_extents_t e;
  cairo_text_extents(cr, s.c_str(), &e);
  return e.x_advance;
}

// The legend as rows of (swatch, label) entries that fit the width.
std::vector<std::vector<size_t>> legend_rows(cairo_t* cr, const PlotPanel& p, double width) {
  std::vector<std::vector<size_t>> rows;
  double x = 0;
  for (size_t i = 0; i < p.series.size(); ++i) {
    if (p.series[i].label.empty()) continue;  // unlabelled series stay out of the legend
    const double w = 28 + text_width(cr, p.series[i].label) + 16;
    if (rows.empty() || x + w > width) {
      rows.emplace_back();
      x = 0;
    }
    rows.back().push_back(i);
    x += w;
  }
  return rows;
}

// The extent of finite values, empty (lo > hi) when there are none.
struct Range {
  double lo = std::numeric_limits<double>::infinity(), hi = -std::numeric_limits<double>::infinity();
  void add(double v) {
    if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  }
  bool empty() const { return lo > hi; }
};

// x over the points drawn (both coordinates finite) and the vertical lines.
Range x_extent(const PlotPanel& p) {
  Range r;
  for (const PlotSeries& s : p.series)
    for (size_t i = 0; i < s.x.size(); ++i)
      if (std::isfinite(s.y[i])) r.add(s.x[i]);
  for (double v : p.vertical_lines) r.add(v);
  return r;
}

// x_range: the panel's x extent, or that of every panel sharing its x label.
void draw_panel(cairo_t* cr, const PlotPanel& p, Range x_range, double top, double width, double height) {
  cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(cr, kFont);
  const auto legend = legend_rows(cr, p, width - kLeft - kRight);
  const double x0 = kLeft, x1 = width - kRight;
  const double y0 = top + kTitle + kLegendRow * static_cast<double>(legend.size()) + 6, y1 = top + height - kBottom;

  Range y_range;
  for (const PlotSeries& s : p.series)
    for (size_t i = 0; i < s.y.size(); ++i)
      if (std::isfinite(s.x[i])) y_range.add(s.y[i]);
  if (!y_range.empty())
    for (double v : p.y_include) y_range.add(v);
  const bool has_y = !y_range.empty();
  const Axis ax = x_range.empty() ? nice_axis(0, 1) : nice_axis(x_range.lo, x_range.hi);
  const Axis ay = has_y ? nice_axis(y_range.lo, y_range.hi) : nice_axis(0, 1);
  // Data map into the frame inset by kInset, so points on the axis limits (an accuracy
  // of 1, the first epoch) are not cut in half by the frame.
  auto px = [&](double x) { return x0 + kInset + (x - ax.lo) / (ax.hi - ax.lo) * (x1 - x0 - 2 * kInset); };
  auto py = [&](double y) { return y1 - kInset - (y - ay.lo) / (ay.hi - ay.lo) * (y1 - y0 - 2 * kInset); };

  // Title.
  cairo_set_font_size(cr, kTitleFont);
  cairo_set_source_rgb(cr, 0, 0, 0);
  text_at(cr, p.title, (x0 + x1) / 2, top + 8, 0.5, 0);
  cairo_set_font_size(cr, kFont);

  // Grid and ticks.
  cairo_set_line_width(cr, 1);
  for (double v = ax.lo; v <= ax.hi + ax.step * 1e-6; v += ax.step) {
    const double x = std::round(px(v)) + 0.5;
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, x, y0), cairo_line_to(cr, x, y1), cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    cairo_move_to(cr, x, y1), cairo_line_to(cr, x, y1 + 5), cairo_stroke(cr);
    text_at(cr, tick_label(v, ax.step), x, y1 + 8, 0.5, 0);
  }
  for (double v = ay.lo; v <= ay.hi + ay.step * 1e-6; v += ay.step) {
    const double y = std::round(py(v)) + 0.5;
    cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
    cairo_move_to(cr, x0, y), cairo_line_to(cr, x1, y), cairo_stroke(cr);
    cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
    cairo_move_to(cr, x0 - 5, y), cairo_line_to(cr, x0, y), cairo_stroke(cr);
    text_at(cr, tick_label(v, ay.step), x0 - 8, y, 1, 0.5);
  }
  // Axis labels: x centred below the ticks, y rotated along the left edge.
  cairo_set_source_rgb(cr, 0, 0, 0);
  text_at(cr, p.x_label, (x0 + x1) / 2, y1 + 28, 0.5, 0);
  cairo_save(cr);
  cairo_translate(cr, 14, (y0 + y1) / 2);
  cairo_rotate(cr, -M_PI / 2);
  text_at(cr, p.y_label, 0, 0, 0.5, 0);
  cairo_restore(cr);
  if (!has_y) text_at(cr, "no data", (x0 + x1) / 2, (y0 + y1) / 2, 0.5, 0.5);

  // Everything data-dependent is clipped to the plot area.
  cairo_save(cr);
  cairo_rectangle(cr, x0, y0, x1 - x0, y1 - y0);
  cairo_clip(cr);
  // Vertical markers: dashed dark grey (not a palette colour).
  const double dash[] = {6, 4};
  cairo_set_dash(cr, dash, 2, 0);
  cairo_set_source_rgb(cr, 0.35, 0.35, 0.35);
  cairo_set_line_width(cr, 2);
  for (double v : p.vertical_lines) {
    if (!std::isfinite(v)) continue;
    const double x = std::round(px(v));  // 2 px wide on a pixel edge: two crisp columns
    cairo_move_to(cr, x, y0), cairo_line_to(cr, x, y1), cairo_stroke(cr);
  }
  cairo_set_dash(cr, nullptr, 0, 0);
  // Series: a polyline broken at non-finite points, then optional dots.
  cairo_set_line_width(cr, 2);
  cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
  for (size_t k = 0; k < p.series.size(); ++k) {
    const PlotSeries& s = p.series[k];
    set_rgb(cr, series_colour(k));
    bool pen_down = false;
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) {
        pen_down = false;
        continue;
      }
      if (pen_down)
        cairo_line_to(cr, px(s.x[i]), py(s.y[i]));
      else
        cairo_move_to(cr, px(s.x[i]), py(s.y[i]));
      pen_down = true;
    }
    cairo_stroke(cr);
    // A lone point has no line: draw it as a dot even without markers.
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      if (!p.markers && s.x.size() > 1) break;
      cairo_arc(cr, px(s.x[i]), py(s.y[i]), 3.5, 0, 2 * M_PI);
      cairo_fill(cr);
    }
  }
  cairo_restore(cr);

  // Frame, then the legend rows under the title.
  cairo_set_source_rgb(cr, 0.2, 0.2, 0.2);
  cairo_set_line_width(cr, 1);
  cairo_rectangle(cr, x0 + 0.5, y0 + 0.5, x1 - x0 - 1, y1 - y0 - 1);
  cairo_stroke(cr);
  for (size_t r = 0; r < legend.size(); ++r) {
    double x = x0;
    const double y = top + kTitle + kLegendRow * (static_cast<double>(r) + 0.5);
    for (size_t k : legend[r]) {
      set_rgb(cr, series_colour(k));
      cairo_set_line_width(cr, 3);
      cairo_move_to(cr, x, y), cairo_line_to(cr, x + 22, y), cairo_stroke(cr);
      cairo_set_source_rgb(cr, 0, 0, 0);
      text_at(cr, p.series[k].label, x + 28, y, 0, 0.5);
      x += 28 + text_width(cr, p.series[k].label) + 16;
    }
  }
}

}  // namespace

void write_plot_png(const std::string& path, const std::vector<PlotPanel>& panels, int width, int panel_height) {
  COCONUT_CHECK(!panels.empty(), "plot '{}': no panels to draw", path);
  COCONUT_CHECK(width >= 200 && panel_height >= 120 && panel_height * panels.size() <= 20000,
                "plot '{}': size {}x{} per panel is out of range (width >= 200, panel height >= 120)", path,
                width, panel_height);
  for (const PlotPanel& p : panels)
    for (const PlotSeries& s : p.series)
      COCONUT_CHECK(s.x.size() == s.y.size(), "plot '{}', panel '{}', series '{}': {} x values but {} y values",
                    path, p.title, s.label, s.x.size(), s.y.size());

  const int height = panel_height * static_cast<int>(panels.size());
  std::unique_ptr<cairo_surface_t, decltype(&cairo_surface_destroy)> surface(
      cairo_image_surface_create(CAIRO_FORMAT_RGB24, width, height), &cairo_surface_destroy);
  COCONUT_CHECK(cairo_surface_status(surface.get()) == CAIRO_STATUS_SUCCESS, "plot '{}': cannot create a {}x{} image: {}",
                path, width, height, cairo_status_to_string(cairo_surface_status(surface.get())));
  std::unique_ptr<cairo_t, decltype(&cairo_destroy)> cr(cairo_create(surface.get()), &cairo_destroy);
  cairo_set_source_rgb(cr.get(), 1, 1, 1);
  cairo_paint(cr.get());
  // Stacked panels with the same x label share one x axis, so that their curves and
  // vertical lines line up (a loss panel over an accuracy panel, both per epoch).
  for (size_t i = 0; i < panels.size(); ++i) {
    Range x_range;
    for (const PlotPanel& q : panels)
      if (q.x_label == panels[i].x_label) {
        const Range r = x_extent(q);
        x_range.add(r.lo), x_range.add(r.hi);
      }
    draw_panel(cr.get(), panels[i], x_range, static_cast<double>(i) * panel_height, width, panel_height);
  }
  COCONUT_CHECK(cairo_status(cr.get()) == CAIRO_STATUS_SUCCESS, "plot '{}': drawing failed: {}", path,
                cairo_status_to_string(cairo_status(cr.get())));
  cairo_surface_flush(surface.get());
  const cairo_status_t st = cairo_surface_write_to_png(surface.get(), path.c_str());
  COCONUT_CHECK(st == CAIRO_STATUS_SUCCESS, "cannot write the plot '{}': {}", path, cairo_status_to_string(st));
}

}  // namespace coconut::launcher
