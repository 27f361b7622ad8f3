// The subset of Kafka's kafka-topics.sh that the topics Job uses, for the dev Kafka image.
//
//   kafka-topics.sh --bootstrap-server HOST:PORT --create [--if-not-exists] --topic T
//                   --partitions N --replication-factor R
//   kafka-topics.sh --bootstrap-server HOST:PORT --list
//
// Why not Kafka's own: TopicCommand lives in org.apache.kafka:kafka-tools, which the broker's
// classpath (scripts/infra/kafka.sh, the jars `make up` runs) does not include; this needs only
// kafka-clients' Admin API, which it does. Unknown flags fail loudly rather than being ignored.

import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.common.errors.TopicExistsException;

public final class KafkaTopics {
  private KafkaTopics() {}

  public static void main(String[] argv) throws Exception {
    Map<String, String> options = new HashMap<>();
    boolean create = false;
    boolean list = false;
    boolean ifNotExists = false;
    for (int i = 0; i < argv.length; i++) {
      switch (argv[i]) {
        case "--create" -> create = true;
        case "--list" -> list = true;
        case "--if-not-exists" -> ifNotExists = true;
        case "--bootstrap-server", "--topic", "--partitions", "--replication-factor" -> {
          if (i + 1 >= argv.length) {
            throw new IllegalArgumentException(argv[i] + " needs a value");
          }
          options.put(argv[i], argv[++i]);
        }
        default -> throw new IllegalArgumentException("unsupported argument: " + argv[i]);
      }
    }
    String bootstrap = options.get("--bootstrap-server");
    if (bootstrap == null || create == list) {
      throw new IllegalArgumentException("need --bootstrap-server and one of --create, --list");
    }
    Properties config = new Properties();
    config.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    try (Admin admin = Admin.create(config)) {
      if (list) {
        for (String name : new TreeSet<>(admin.listTopics().names().get())) {
          System.out.println(name);
        }
        return;
      }
      String topic = options.get("--topic");
      if (topic == null) {
        throw new IllegalArgumentException("--create needs --topic");
      }
      NewTopic spec =
          new NewTopic(
              topic,
              Integer.parseInt(options.getOrDefault("--partitions", "1")),
              Short.parseShort(options.getOrDefault("--replication-factor", "1")));
      try {
        admin.createTopics(List.of(spec)).all().get();
        System.out.println("Created topic " + topic + ".");
      } catch (ExecutionException e) {
        if (!(ifNotExists && e.getCause() instanceof TopicExistsException)) {
          throw e;
        }
      }
    }
  }
}
