// write_plot_png: the file is a PNG of the requested size (signature and IHDR read from
// the bytes), series appear in their documented palette colours, stage lines in their
// grey, colours of series not drawn do not appear; bad input names the path.
#include <cairo.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "launcher/plot.h"
#include "runtime/check.h"

namespace coconut::launcher {
namespace {

namespace fs = std::filesystem;

// Per process: parallel ctest runs (and other build trees) must not share files.
fs::path temp_dir() { return fs::temp_directory_path() / ("coconut_test_plot." + std::to_string(getpid())); }

std::string temp_png(const std::string& name) {
  fs::create_directories(temp_dir());
  return (temp_dir() / name).string();
}

// Removes the process's PNGs after the tests.
class TempDirCleanup : public ::testing::Environment {
 public:
  void TearDown() override { fs::remove_all(temp_dir()); }
};
const auto* const kCleanup = ::testing::AddGlobalTestEnvironment(new TempDirCleanup);

uint32_t be32(const std::string& b, size_t at) {
  return (uint32_t(uint8_t(b[at])) << 24) | (uint32_t(uint8_t(b[at + 1])) << 16) | (uint32_t(uint8_t(b[at + 2])) << 8) |
         uint32_t(uint8_t(b[at + 3]));
}

// Pixels of exactly this colour in the PNG (decoded by cairo's PNG reader).
int count_colour(const std::string& path, int r, int g, int b) {
  cairo_surface_t* s = cairo_image_surface_create_from_png(path.c_str());
  EXPECT_EQ(cairo_surface_status(s), CAIRO_STATUS_SUCCESS);
  const int w = cairo_image_surface_get_width(s), h = cairo_image_surface_get_height(s);
  const int stride = cairo_image_surface_get_stride(s);
  const unsigned char* data = cairo_image_surface_get_data(s);
  int n = 0;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint32_t px;
      std::memcpy(&px, data + y * stride + 4 * x, 4);  // native-endian 0xAARRGGBB
      n += int((px >> 16) & 0xff) == r && int((px >> 8) & 0xff) == g && int(px & 0xff) == b;
    }
  cairo_surface_destroy(s);
  return n;
}

std::vector<PlotPanel> two_panels() {
  PlotSeries loss{"loss", {}, {}}, other{"other", {}, {}};
  for (int i = 0; i < 20; ++i) {
    loss.x.push_back(i), loss.y.push_back(3.0 * std::exp(-0.2 * i));
    other.x.push_back(i), other.y.push_back(i % 7 == 3 ? std::nan("") : 0.1 * i);  // NaN: gaps
  }
  PlotSeries acc{"valid_accuracy", {0, 5, 10, 15, 19}, {0.1, 0.3, 0.35, 0.6, 0.8}};
  PlotPanel p1{"loss", "epoch", "loss", {loss, other}, {4.5, 9.5}, false, {}};
  PlotPanel p2{"accuracy", "epoch", "accuracy", {acc}, {}, true, {}};
  return {p1, p2};
}

TEST(Plot, PngOfTheRequestedSize) {
  const std::string path = temp_png("size.png");
  write_plot_png(path, two_panels(), 640, 300);
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 33u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(bytes.substr(12, 4), "IHDR");
  EXPECT_EQ(be32(bytes, 16), 640u);  // width
  EXPECT_EQ(be32(bytes, 20), 600u);  // two panels of 300
}

TEST(Plot, SeriesAndStageLinesInTheirColours) {
  const std::string path = temp_png("colours.png");
  write_plot_png(path, two_panels());
  // Palette order (plot.cpp): blue #1f77b4, orange #ff7f0e; stage lines grey 0.35.
  const int blue = count_colour(path, 0x1f, 0x77, 0xb4), orange = count_colour(path, 0xff, 0x7f, 0x0e);
  EXPECT_GT(blue, 500);    // the loss curve (panel 1) and accuracy (panel 2, first series)
  EXPECT_GT(orange, 300);  // the second series of panel 1
  EXPECT_GT(count_colour(path, 89, 89, 89), 400);  // two dashed 2-px lines over ~270 px
  EXPECT_EQ(count_colour(path, 0x2c, 0xa0, 0x2c), 0);  // green: no third series anywhere
  EXPECT_GT(count_colour(path, 255, 255, 255), 900 * 720 / 2);  // mostly white background

  // Without vertical lines the grey all but disappears (a few anti-aliased text pixels
  // may share it): the count above is the lines'.
  std::vector<PlotPanel> panels = two_panels();
  panels[0].vertical_lines.clear();
  write_plot_png(path, panels);
  EXPECT_LT(count_colour(path, 89, 89, 89), 30);
}

TEST(Plot, SamePlotSameBytes) {
  const std::string a = temp_png("a.png"), b = temp_png("b.png");
  write_plot_png(a, two_panels());
  write_plot_png(b, two_panels());
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(fa), {}), std::string(std::istreambuf_iterator<char>(fb), {}));
}

TEST(Plot, EmptyAndDegenerateDataStillDraw) {
  const std::string path = temp_png("degenerate.png");
  PlotPanel empty{"nothing", "x", "y", {}, {}, false, {}};
  PlotPanel single{"one point", "x", "y", {{"p", {3}, {0.5}}}, {}, false, {}};
  PlotPanel flat{"flat", "x", "y", {{"f", {0, 1, 2}, {2, 2, 2}}}, {1.5}, false, {}};
  EXPECT_NO_THROW(write_plot_png(path, {empty, single, flat}));
  EXPECT_GT(count_colour(path, 0x1f, 0x77, 0xb4), 20);  // the lone point is drawn as a dot
}

TEST(Plot, BadInputNamesThePath) {
  const std::string path = temp_png("bad.png");
  PlotPanel p{"t", "x", "y", {{"s", {1, 2, 3}, {1, 2}}}, {}, false, {}};
  try {
    write_plot_png(path, {p});
    FAIL() << "mismatched x/y sizes accepted";
  } catch (const coconut::Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  const std::string nowhere = "/nonexistent_dir_for_coconut_tests/plot.png";
  try {
    write_plot_png(nowhere, two_panels());
    FAIL() << "writing into a missing directory succeeded";
  } catch (const coconut::Error& e) {
    EXPECT_NE(std::string(e.what()).find(nowhere), std::string::npos) << e.what();
  }
  EXPECT_THROW(write_plot_png(path, {}), coconut::Error);
}

}  // namespace
}  // namespace coconut::launcher
