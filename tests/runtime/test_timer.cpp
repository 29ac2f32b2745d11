// Tests of runtime/timer.h: the Timer measures real time; Profile sums named scopes.
#include "runtime/timer.h"

#include <gtest/gtest.h>

#include <thread>

namespace coconut {
namespace {

TEST(Timer, MeasuresSleep) {
  Timer t;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  double s = t.seconds();
  EXPECT_GE(s, 0.019);
  EXPECT_LT(s, 2.0);
  EXPECT_NEAR(t.ms(), t.seconds() * 1e3, 5.0);
  t.start();
  EXPECT_LT(t.seconds(), 0.019);
}

TEST(Profile, ScopedTimersAccumulate) {
  Profile p;
  for (int i = 0; i < 3; ++i) {
    ScopedTimer st(p, "forward");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  { ScopedTimer st(p, "backward"); }
  EXPECT_EQ(p.entries().at("forward").count, 3);
  EXPECT_GE(p.seconds("forward"), 0.0145);
  EXPECT_EQ(p.entries().at("backward").count, 1);
  EXPECT_EQ(p.seconds("missing"), 0.0);
  std::string r = p.report();
  EXPECT_LT(r.find("forward"), r.find("backward")) << r;  // largest first
  p.clear();
  EXPECT_TRUE(p.entries().empty());
}

}  // namespace
}  // namespace coconut
