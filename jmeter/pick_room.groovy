// Many-rooms workload (rooms > 1): before each post, pick the round's room among
// `rooms` rooms named room_prefix-000, -001, ... with a Zipf-like skew (rank k has
// weight 1 / k^zipf_s), as real chats have a few busy rooms and a long quiet tail. The
// post and the reads after it go to that room; each user keeps its own position per room.
int rooms = (vars.get('rooms') ?: '1') as int
if (rooms <= 1) return
double s = (vars.get('zipf_s') ?: '1.0') as double
String key = 'chatsys.zipf.' + rooms + '.' + s
double[] cumulative
synchronized (props) {
  cumulative = props.get(key)
  if (cumulative == null) {
    cumulative = new double[rooms]
    double sum = 0d
    for (int k = 0; k < rooms; k++) { sum += 1d / Math.pow(k + 1, s); cumulative[k] = sum }
    for (int k = 0; k < rooms; k++) cumulative[k] /= sum
    props.put(key, cumulative)
  }
}
double u = java.util.concurrent.ThreadLocalRandom.current().nextDouble()
int index = Arrays.binarySearch(cumulative, u)
if (index < 0) index = -index - 1
index = Math.min(index, rooms - 1)
String room = vars.get('room_prefix') + '-' + String.format('%03d', index)
vars.put('room', room)
vars.put('after', vars.get('after_' + room) ?: '0')
