// Before every chat request, in both models: the request's arrival in the open model, and
// the round's room before a post in the many-rooms workload. This script runs once per
// user, in its setup, and leaves the object `chatsys.pacing` in the user's variables; the
// plan's timer on every chat request is a one-line JEXL script calling its `before`. A
// JSR223 Groovy call costs a new Groovy engine and script context each time, several times
// the work itself, which is statically compiled here (no dynamic dispatch), its settings
// read once.
//
// Arrivals (model=open): one Poisson schedule of arrivals shared by the whole user pool.
// Each chat request claims the next arrival and waits for it; a request whose arrival is
// already past (every user was busy) goes at once, and its latency is still counted from
// the arrival (`scheduled_ms`, saved with every sample), so a slow system cannot hold the
// load back unseen: no coordinated omission. The schedule starts once every user of the
// pool has finished its setup (a user whose login failed has stopped and is not waited
// for; at most `setup_timeout` seconds) and lasts
// `arrival_seconds` (0: until the thread group's duration); then the test stops, so the
// measured stretch does not depend on how long the setup took.
//
// Rooms (rooms > 1): before each post, pick the round's room among `rooms` rooms named
// room_prefix-000, -001, ... with a Zipf-like skew (rank k has weight 1 / k^zipf_s), as
// real chats have a few busy rooms and a long quiet tail. The post and the reads after it
// go to that room; each user keeps its own position per room.
import groovy.transform.CompileStatic
import java.util.concurrent.atomic.AtomicInteger
import java.util.concurrent.ThreadLocalRandom
import org.apache.jmeter.protocol.http.sampler.HTTPSamplerBase
import org.apache.jmeter.samplers.Sampler
import org.apache.jmeter.threads.JMeterContext
import org.apache.jmeter.threads.JMeterContextService
import org.apache.jmeter.threads.JMeterVariables

@CompileStatic
class ArrivalSchedule {
  static final String KEY = 'chatsys.arrivals'

  final AtomicInteger joined = new AtomicInteger()
  final Random random = new Random()
  final double rate
  final long rampupMs
  final long setupTimeoutMs
  final long arrivalMs
  double next = 0d
  double origin = 0d

  ArrivalSchedule(JMeterVariables vars) {
    rate = Double.parseDouble(vars.get('arrival_rate') ?: '10')
    rampupMs = Long.parseLong(vars.get('rampup') ?: '0') * 1000L
    setupTimeoutMs = Long.parseLong(vars.get('setup_timeout') ?: '60') * 1000L
    arrivalMs = Long.parseLong(vars.get('arrival_seconds') ?: '0') * 1000L
  }

  /** The pool's schedule, made by the first user that asks. */
  static ArrivalSchedule of(Properties props, JMeterVariables vars) {
    synchronized (props) {
      ArrivalSchedule schedule = (ArrivalSchedule) props.get(KEY)
      if (schedule == null) {
        schedule = new ArrivalSchedule(vars)
        props.put(KEY, schedule)
      }
      schedule
    }
  }

  /** Once per user, before its first request: waits until every user started (the ramp-up
   * is over) and every one still running has joined. */
  void join() {
    joined.incrementAndGet()
    long deadline = System.currentTimeMillis() + setupTimeoutMs
    long rampedUp = JMeterContextService.getTestStartTime() + rampupMs
    while (System.currentTimeMillis() < deadline && (System.currentTimeMillis() < rampedUp
        || joined.get() < JMeterContextService.getNumberOfThreads())) {
      Thread.sleep(20)
    }
  }

  /** Claims the next arrival for this user's request: the milliseconds to wait for it. */
  long claim(JMeterVariables vars, JMeterContext ctx) {
    long slot
    synchronized (this) {
      if (next == 0d) next = origin = (double) System.currentTimeMillis()
      slot = (long) next
      next += -Math.log(1d - random.nextDouble()) * 1000d / rate
    }
    vars.put('scheduled_ms', String.valueOf(slot))
    if (arrivalMs > 0 && slot >= origin + arrivalMs) {
      ctx.getEngine().askThreadsToStop()  // the schedule is over: each user stops after this request
      return 0L
    }
    Math.max(0L, slot - System.currentTimeMillis())
  }
}

@CompileStatic
class RoomPicker {
  final int rooms
  final String prefix
  final double[] cumulative

  RoomPicker(int rooms, double s, String prefix) {
    this.rooms = rooms
    this.prefix = prefix
    cumulative = new double[rooms]
    double sum = 0d
    for (int k = 0; k < rooms; k++) { sum += 1d / Math.pow(k + 1, s); cumulative[k] = sum }
    for (int k = 0; k < rooms; k++) cumulative[k] /= sum
  }

  /** The pool's picker (one table per rooms and zipf_s), made by the first user that asks. */
  static RoomPicker of(Properties props, JMeterVariables vars) {
    int rooms = Integer.parseInt(vars.get('rooms') ?: '1')
    double s = Double.parseDouble(vars.get('zipf_s') ?: '1.0')
    String key = 'chatsys.zipf.' + rooms + '.' + s
    RoomPicker picker
    synchronized (props) {
      picker = (RoomPicker) props.get(key)
      if (picker == null) {
        picker = new RoomPicker(rooms, s, vars.get('room_prefix'))
        props.put(key, picker)
      }
    }
    picker
  }

  void pick(JMeterVariables vars) {
    int index = Arrays.binarySearch(cumulative, ThreadLocalRandom.current().nextDouble())
    if (index < 0) index = -index - 1
    index = Math.min(index, rooms - 1)
    String room = prefix + '-' + String.format('%03d', index)
    vars.put('room', room)
    vars.put('after', vars.get('after_' + room) ?: '0')
  }
}

/** This user's part: the pool's schedule (open model) and room picker (rooms > 1), or null. */
@CompileStatic
class ChatPacing {
  static final String KEY = 'chatsys.pacing'

  final ArrivalSchedule schedule
  final RoomPicker picker
  boolean joined = false

  ChatPacing(Properties props, JMeterVariables vars) {
    schedule = vars.get('model') == 'open' ? ArrivalSchedule.of(props, vars) : null
    picker = Integer.parseInt(vars.get('rooms') ?: '1') > 1 ? RoomPicker.of(props, vars) : null
  }

  /** The milliseconds to wait before this request (0 in the closed model). */
  long before(Sampler sampler, JMeterVariables vars, JMeterContext ctx) {
    if (picker != null && sampler instanceof HTTPSamplerBase && ((HTTPSamplerBase) sampler).getMethod() == 'POST') {
      picker.pick(vars)
    }
    if (schedule == null) return 0L
    if (!joined) {
      schedule.join()
      joined = true
    }
    schedule.claim(vars, ctx)
  }
}

vars.putObject(ChatPacing.KEY, new ChatPacing(props, vars))
